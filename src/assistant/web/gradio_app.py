"""The Gradio chat UI: streamed cited answers, citation cards, feedback, and a task browser.

The UI holds no answer logic: it calls ``Assistant.stream`` and renders what comes back.
Every piece of user or model text that goes into HTML is escaped here (``html.escape``);
the chat's markdown is additionally sanitised by the Chatbot component.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Generator, Iterator
from typing import Any

import gradio as gr

from assistant.config import Settings
from assistant.feedback import FeedbackStore, FeedbackUnavailable
from assistant.ingest.corpus import load_corpus
from assistant.ingest.models import Corpus, Task
from assistant.state import ConversationUnavailable

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2_000
EXAMPLES: list[str] = [
    "Can foreign companies run elderly care homes?",
    "外资能办医院吗？",
    "外资做VPN持股上限多少?",
    "第17项是什么",
    "Which tasks are differentiated pilot tasks?",
    "境外人员可以在厦门执业吗？",
]

_CSS = """
.citation-cards { display: flex; flex-direction: column; gap: 6px; margin-top: 4px; }
.citation-cards details, .task-card { border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 6px 10px; background: var(--block-background-fill); }
.citation-cards summary { cursor: pointer; font-weight: 600; }
.citation-cards .ref, .task-card .ref { font-weight: 700; margin-right: 6px; }
.citation-cards .section, .task-card .section { color: var(--body-text-color-subdued); font-size: 0.9em; }
.citation-cards .document { display: block; color: var(--body-text-color-subdued); font-size: 0.8em; font-weight: 400; }
.citation-cards .zh, .citation-cards .en, .task-card .zh, .task-card .en { margin: 6px 0; line-height: 1.6; }
.citation-cards .en, .task-card .en { color: var(--body-text-color-subdued); }
.badge { display: inline-block; font-size: 0.8em; padding: 0 6px; border-radius: 6px; margin-left: 6px;
  background: var(--color-accent-soft); }
.task-list { display: flex; flex-direction: column; gap: 8px; }
.coverage { display: inline-block; font-size: 0.85em; padding: 1px 8px; border-radius: 10px; margin: 2px 0;
  border: 1px solid var(--border-color-primary); }
.coverage-full { background: #e6f4ea; color: #1e6b34; }
.coverage-partial { background: #fff4e0; color: #8a5a00; }
.coverage-none { background: #f1f1f1; color: #555; }
"""


def ui_css() -> str:
    """CSS for the cards (Gradio 6 takes CSS at launch/mount time, not in ``Blocks``)."""
    return _CSS


def ui_theme() -> gr.themes.Base:
    """A theme with system fonts only: the UI must not fetch web fonts (no internet at run time)."""
    system = ["system-ui", "-apple-system", "Segoe UI", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei",
              "sans-serif"]
    return gr.themes.Soft(font=system, font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])


def _esc(text: Any) -> str:
    return html.escape(str(text or ""), quote=True)


def chat_safe(text: str) -> str:
    """Markdown for the Chatbot with every ``<`` escaped, so no tag from users or the model survives,
    and image syntax (``![alt](url)``) shown as text, so no answer makes the browser fetch a URL
    (a prompt-injected model could otherwise leak the conversation in an image address)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("![", "!\\[")


# --- HTML renderers (pure functions, unit-testable) -------------------------------------------
COVERAGE_LABELS = {"full": ("方案已覆盖", "covered by the plan"), "partial": ("部分覆盖", "partly covered"),
                   "none": ("未涉及", "not covered")}
RESET_NOTICE = ("The earlier conversation had expired, so this question was answered on its own. "
                "/ 之前的对话已过期，本问题按新对话回答。")
BUSY_NOTICE = "The service is busy right now; please try again in a moment. / 服务繁忙，请稍后再试。"
SORRY = "Sorry, the answer could not be produced. / 抱歉，暂时无法回答。"


def coverage_badge(coverage: str | None) -> str:
    """A small badge saying how far the plan covers the question (full, partial, none)."""
    if coverage not in COVERAGE_LABELS:
        return ""
    zh, en = COVERAGE_LABELS[coverage]
    return (f'<span class="coverage coverage-{coverage}" data-coverage="{coverage}" title="coverage: {coverage}">'
            f"{zh} · {en}</span>")


def _is_unavailable(exc: BaseException) -> bool:
    """A 503 condition: a component still loading, or the conversation store unusable right now."""
    return isinstance(exc, ConversationUnavailable | FeedbackUnavailable) or type(exc).__name__ == "ServiceUnavailable"


def _field(item: Any, name: str, default: Any = None) -> Any:
    return item.get(name, default) if isinstance(item, dict) else getattr(item, name, default)


def citation_cards(citations: list[Any], lang: str = "en") -> str:
    """Citation cards that expand (``<details>``) to the full Chinese and English text."""
    if not citations:
        return ""
    cards = []
    for c in citations:
        task = _field(c, "task")
        if task is not None:
            ref = f"Task {int(task)} · 第{int(task)}项" if lang == "en" else f"第{int(task)}项 · Task {int(task)}"
        else:
            number = _field(c, "section_id") or ""
            ref = f"Section {number} · 正文" if lang == "en" else f"正文 {number} · Section"
        section = _field(c, "section") or ""
        text_en = _field(c, "text_en")
        document = _field(c, "document") or {}
        number = document.get("number") if isinstance(document, dict) else None
        source = (f'<span class="document" data-document="{_esc(number)}">{_esc(number)} · '
                  f'{_esc(document.get("title"))}</span>' if number else "")
        cards.append(
            f'<details class="citation" data-task="{_esc(task)}">'
            f'<summary><span class="ref">{_esc(ref)}</span><span class="section">{_esc(section)}</span>'
            f'{source}</summary>'
            f'<p class="zh" lang="zh-CN">{_esc(_field(c, "text"))}</p>'
            + (f'<p class="en" lang="en">{_esc(text_en)}</p>' if text_en else "")
            + "</details>"
        )
    title = "Sources" if lang == "en" else "出处"
    return f'<div class="citation-cards"><strong>{title} ({len(cards)})</strong>{"".join(cards)}</div>'


def task_card(task: Task) -> str:
    badge = ' <span class="badge">差异化试点任务 · differentiated pilot task</span>' if task.differentiated else ""
    return (f'<div class="task-card" id="task-{task.number}">'
            f'<div><span class="ref">第{task.number}项 · Task {task.number}</span>{badge}</div>'
            f'<p class="zh" lang="zh-CN">{_esc(task.text)}</p>'
            f'<p class="en" lang="en">{_esc(task.text_en)}</p></div>')


def category_html(corpus: Corpus, number: int | None) -> str:
    """All tasks of a category in both languages."""
    category = corpus.category(int(number)) if number is not None else None
    if category is None:
        return "<p>Choose a category / 请选择类别</p>"
    tasks = [t for t in corpus.tasks if t.category_no == category.number]
    heading = (f"<h3>{_esc(category.label)}</h3><p class=\"en\">{category.number}. {_esc(category.title_en)} "
               f"— {len(tasks)} tasks / {len(tasks)}项任务</p>")
    return f'{heading}<div class="task-list">{"".join(task_card(t) for t in tasks)}</div>'


# --- callbacks -----------------------------------------------------------------------------------
def _answer_of(stream: Generator[str, None, Any]) -> Iterator[tuple[str, Any]]:
    """Yield ``(markdown, None)`` while streaming, then ``(markdown, Answer)`` once.

    ``Assistant.stream`` returns the final ``Answer`` (citations, conversation id) as the
    generator's return value, which a plain ``for`` loop would drop.
    """
    text = ""
    while True:
        try:
            text = next(stream)
        except StopIteration as stop:
            answer = stop.value
            break
        yield text, None
    yield (getattr(answer, "answer", None) or text), answer


def build_ui(assistant: Any, engine: Any, feedback_store: FeedbackStore | None, settings: Settings) -> gr.Blocks:
    """The chat and browse tabs.

    ``assistant`` is only touched inside callbacks, so the API can pass a stand-in that the
    lifespan fills after start-up; the browse tab reads the corpus, which loads in milliseconds.
    ``engine`` is accepted for symmetry with the API (and future search views).
    """
    corpus = load_corpus(settings)
    category_choices = [(f"{c.number}. {c.title} · {c.title_en}", c.number) for c in corpus.categories]

    def respond(message: str, transcript: list[dict[str, str]], conversation_id: str | None
                ) -> Iterator[dict[Any, Any]]:
        """Stream one answer; the input is locked meanwhile, so a follow-up always sees its id."""
        question = (message or "").strip()
        transcript = list(transcript or [])
        if not question:
            yield {notice: "Please type a question. / 请输入问题。"}
            return
        if len(question) > MAX_QUESTION_CHARS:
            yield {notice: f"The question is too long ({len(question)} characters; at most {MAX_QUESTION_CHARS})."}
            return
        transcript += [{"role": "user", "content": chat_safe(question)}, {"role": "assistant", "content": "…"}]
        locked = {question_box: gr.update(value="", interactive=False), send: gr.update(interactive=False)}
        yield {chatbot: transcript, history: transcript, cards: "", last_answer: None, notice: "", status: "",
               **locked}
        unlocked = {question_box: gr.update(interactive=True), send: gr.update(interactive=True)}
        answer = None
        try:
            for markdown, result in _answer_of(assistant.stream(question, conversation_id=conversation_id)):
                answer = result or answer
                transcript[-1] = {"role": "assistant", "content": chat_safe(markdown)}
                yield {chatbot: transcript, history: transcript}
        except Exception as exc:  # the UI must keep working whatever the answer layer does
            busy = _is_unavailable(exc)
            if busy:
                log.warning("answering %r: %s", question, exc)
            else:
                log.exception("answering %r failed", question)
            transcript[-1] = {"role": "assistant", "content": BUSY_NOTICE if busy else SORRY}
            yield {chatbot: transcript, history: transcript, notice: BUSY_NOTICE if busy else "", **unlocked}
            return
        citations = [_to_json(c) for c in (getattr(answer, "citations", None) or [])]
        lang = getattr(answer, "lang", None) or "en"
        last = {"question": question, "answer": getattr(answer, "answer", None) or transcript[-1]["content"],
                "citations": citations, "rated": None}
        notes = [RESET_NOTICE] if getattr(answer, "conversation_reset", False) else []
        notes += [_esc(getattr(answer, "notice", None) or "")]
        resolved = getattr(answer, "resolved_query", None)
        if resolved:  # what was searched: a follow-up made stand-alone, pinyin read as Chinese
            notes.append(("检索为：" if lang == "zh" else "Searched as: ") + _esc(resolved))
        yield {chatbot: transcript, history: transcript, last_answer: last,
               cards: coverage_badge(getattr(answer, "coverage", None)) + citation_cards(citations, lang),
               conversation: getattr(answer, "conversation_id", None) or conversation_id,
               notice: "\n\n".join(n for n in notes if n), **unlocked}

    def rate(rating: str, reason: str, last: dict[str, Any] | None, conversation_id: str | None
             ) -> tuple[str, Any, dict[str, Any] | None]:
        if not last:
            return "Ask a question first, then rate the answer. / 请先提问再评价。", gr.skip(), last
        if last.get("rated"):
            return f"This answer is already rated {'👍' if last['rated'] == 'up' else '👎'}. / 已评价。", "", last
        if feedback_store is None:
            return "Feedback is not enabled. / 未启用反馈。", gr.skip(), last
        try:
            feedback_store.add(rating, last["question"], last["answer"], last["citations"],
                               reason=(reason or "").strip()[:2000] or None, conversation_id=conversation_id)
        except FeedbackUnavailable as exc:
            log.warning("feedback not stored: %s", exc)
            return "Feedback could not be saved right now. / 反馈暂时无法保存。", gr.skip(), last
        last = {**last, "rated": rating}
        return f"Thank you, feedback recorded {'👍' if rating == 'up' else '👎'}. / 感谢反馈！", "", last

    def reset() -> tuple[Any, ...]:
        return [], [], "", None, None, "", ""

    with gr.Blocks(title=f"{corpus.meta.doc_number} policy assistant", analytics_enabled=False) as demo:
        # One conversation per browser session: empty until the assistant opens one on the first
        # question, then its id is passed back with every follow-up (reset by "New conversation").
        conversation = gr.State(None)
        history = gr.State([])  # the chat as shown, kept server-side per session
        last_answer = gr.State(None)
        gr.Markdown(
            f"## {_esc(corpus.meta.plan_title)}\n"
            f"{_esc(corpus.meta.plan_title_en)} ({_esc(corpus.meta.doc_number)}) — ask in Chinese or English; "
            "answers cite the plan's tasks. 用中文或英文提问，回答均注明出处。"
        )
        with gr.Tabs():
            with gr.Tab("Ask · 问答", id="chat"):
                chatbot = gr.Chatbot(label="Answers · 回答", height=460, buttons=["copy", "copy_all"],
                                     sanitize_html=True, allow_tags=False, elem_id="chatbot",
                                     placeholder="Ask about 厦府〔2026〕88号 · 请就方案内容提问")
                notice = gr.Markdown(elem_id="notice")
                cards = gr.HTML(elem_id="citations")
                with gr.Row(equal_height=True):
                    reason = gr.Textbox(show_label=False, placeholder="Was this answer helpful? Optional reason · "
                                        "这个回答有帮助吗？理由（可选）", scale=6, max_length=2000, elem_id="reason")
                    up = gr.Button("👍", scale=1, min_width=60, elem_id="thumbs-up")
                    down = gr.Button("👎", scale=1, min_width=60, elem_id="thumbs-down")
                status = gr.Markdown(elem_id="feedback-status")
                with gr.Row(equal_height=True):
                    question_box = gr.Textbox(show_label=False, placeholder="Your question · 您的问题",
                                              max_length=MAX_QUESTION_CHARS, scale=8, elem_id="question",
                                              autofocus=True)
                    send = gr.Button("Send · 发送", variant="primary", scale=1, elem_id="send")
                    clear = gr.Button("New conversation · 新对话", scale=1, elem_id="new-conversation")
                gr.Examples(examples=[[q] for q in EXAMPLES], inputs=[question_box], label="Examples · 示例")
            with gr.Tab("Browse tasks · 浏览任务", id="browse"):
                category = gr.Dropdown(choices=category_choices, value=None, label="Category · 类别",
                                       elem_id="category")
                tasks_html = gr.HTML(category_html(corpus, None), elem_id="tasks")

        gr.on([question_box.submit, send.click], respond, [question_box, history, conversation],
              [chatbot, history, question_box, send, cards, last_answer, conversation, notice, status],
              show_progress="minimal")
        up.click(lambda *a: rate("up", *a), [reason, last_answer, conversation], [status, reason, last_answer])
        down.click(lambda *a: rate("down", *a), [reason, last_answer, conversation], [status, reason, last_answer])
        reset_outputs = [chatbot, history, cards, last_answer, conversation, status, notice]
        clear.click(reset, None, reset_outputs)
        chatbot.clear(reset, None, reset_outputs)  # the chatbot's own trash button
        category.change(lambda n: category_html(corpus, n), category, tasks_html)
    demo.queue(default_concurrency_limit=8)
    return demo


def _to_json(citation: Any) -> dict[str, Any]:
    to_json = getattr(citation, "to_json", None)
    return to_json() if callable(to_json) else dict(citation)
