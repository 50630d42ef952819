"""End to end: the Gradio UI served by the real app, driven in headless Chromium (Playwright)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from assistant.feedback import FeedbackStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 90_000
TASK17_ZH = "允许外商捐资举办非营利性养老机构"
TASK17_EN = "Allow foreign investors to establish non-profit elderly care institutions"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium: apt-get install -y chromium)",
                allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser session on ``/``; records dialogs (XSS) and requests leaving the server."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.dialogs, tab.external = [], []
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    server = urlparse(live_server).netloc
    tab.on("request", lambda r: tab.external.append(r.url)
           if urlparse(r.url).scheme in ("http", "https", "ws", "wss") and urlparse(r.url).netloc != server
           else None)
    tab.goto(live_server + "/")
    tab.locator("#send").wait_for()
    yield tab
    context.close()


def ask(page, question: str) -> None:
    box = page.locator("#question textarea")
    box.fill(question)
    page.locator("#send").click()


def test_chat_answers_with_task_17_and_expandable_citation(page):
    ask(page, "Can foreign companies run elderly care homes?")
    chat = page.locator("#chatbot")
    expect(chat.get_by_text("Task 17").first).to_be_visible(timeout=TIMEOUT_MS)
    expect(chat).to_contain_text("elderly care", timeout=TIMEOUT_MS)

    card = page.locator('#citations details[data-task="17"]')
    expect(card).to_have_count(1, timeout=TIMEOUT_MS)
    expect(card.locator("p.zh")).to_be_hidden()  # collapsed until opened
    card.locator("summary").click()
    expect(card.locator("p.zh")).to_contain_text(TASK17_ZH)
    expect(card.locator("p.en")).to_contain_text(TASK17_EN)
    expect(chat.get_by_role("button", name="Copy message").first).to_be_attached()  # copy button on answers
    badge = page.locator("#citations .coverage")
    expect(badge).to_have_attribute("data-coverage", "full")
    expect(badge).to_contain_text("方案已覆盖 · covered by the plan")
    assert page.external == [], f"the UI fetched resources from other hosts: {page.external}"


def test_follow_up_uses_the_same_conversation(page):
    ask(page, "Can foreign companies run elderly care homes?")
    expect(page.locator("#chatbot").get_by_text("Task 17").first).to_be_visible(timeout=TIMEOUT_MS)
    ask(page, "What about hospitals?")
    # the follow-up is read as "can foreign companies run hospitals?": the medical-institution tasks
    # (16: non-profit medical institutions; 15: the nursing college that trains for them), not care homes
    medical = page.locator('#citations details[data-task="15"], #citations details[data-task="16"]')
    expect(medical).not_to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.locator("#chatbot")).to_contain_text(re.compile(r"Task 1[56]"))


def test_chinese_example_and_feedback_with_reason(page, settings):
    page.get_by_role("button", name="外资能办医院吗？").click()  # an example fills the box
    expect(page.locator("#question textarea")).to_have_value("外资能办医院吗？")
    page.locator("#send").click()
    expect(page.locator("#chatbot").get_by_text(re.compile(r"第1[56]项")).first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#citations details")).not_to_have_count(0, timeout=TIMEOUT_MS)

    reason = "browser test: wanted the nursing college task too"
    page.locator("#reason textarea").fill(reason)
    page.locator("#thumbs-down").click()
    expect(page.locator("#feedback-status")).to_contain_text("feedback recorded", timeout=TIMEOUT_MS)
    store = FeedbackStore(settings.feedback_path)
    record = next(r for r in store.records() if r.reason == reason)
    store.close()
    assert record.rating == "down" and record.question == "外资能办医院吗？"
    assert re.search(r"第1[56]项", record.answer) and {15, 16} & {c["task"] for c in record.citations}
    assert record.conversation_id
    page.locator("#thumbs-up").click()  # one rating per answer
    expect(page.locator("#feedback-status")).to_contain_text("already rated")


def test_coverage_badge_for_a_question_the_plan_does_not_cover(page):
    ask(page, "What is the best recipe for chocolate cake?")
    badge = page.locator("#citations .coverage")
    expect(badge).to_have_attribute("data-coverage", "none", timeout=TIMEOUT_MS)
    expect(badge).to_contain_text("未涉及 · not covered")
    expect(page.locator('#citations details')).to_have_count(0)


def test_pinyin_question_shows_what_was_searched(page):
    ask(page, "kuajing dianshang")
    expect(page.locator("#notice")).to_contain_text("检索为：跨境 电商", timeout=TIMEOUT_MS)
    expect(page.locator("#citations details")).not_to_have_count(0, timeout=TIMEOUT_MS)


def test_user_text_is_escaped(page):
    ask(page, '<img src=x onerror="alert(1)"><script>alert(2)</script> 第17项')
    chat = page.locator("#chatbot")
    expect(chat.get_by_text("Task 17").first.or_(chat.get_by_text("第17项").nth(1))).to_be_visible(
        timeout=TIMEOUT_MS)
    expect(chat).to_contain_text('<img src=x onerror="alert(1)">')  # shown as text, not run
    assert chat.locator("img[src=x], script").count() == 0
    assert page.dialogs == []


def test_browse_tab_shows_category_2_with_task_17(page):
    page.get_by_role("tab", name="Browse tasks · 浏览任务").click()
    page.locator("#category input").click()
    page.get_by_role("option", name="2. 提高医疗康养领域对外开放和服务保障水平", exact=False).click()
    card = page.locator("#tasks #task-17")
    expect(card).to_be_visible(timeout=TIMEOUT_MS)
    expect(card).to_contain_text("第17项 · Task 17")
    expect(card).to_contain_text(TASK17_ZH)
    expect(card).to_contain_text(TASK17_EN)
    expect(page.locator("#tasks .task-card")).to_have_count(12)


def test_api_docs_render_without_the_internet(browser, live_server):
    """Swagger UI at /docs draws the API from files the server itself serves (air-gapped networks)."""
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    server = urlparse(live_server).netloc
    blocked: list[str] = []

    def offline(route):
        if urlparse(route.request.url).netloc == server:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    tab.route("**/*", offline)
    tab.goto(live_server + "/docs")
    expect(tab.locator(".swagger-ui .info .title")).to_contain_text("Policy assistant")
    expect(tab.locator(".opblock-summary-path", has_text="/api/ask").first).to_be_visible()
    assert blocked == []
    context.close()
