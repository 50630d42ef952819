"""The HTTP API on a real uvicorn server (real engine, models and FAISS), called with httpx."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assistant.api.app import create_app
from assistant.feedback import FeedbackStore

pytestmark = pytest.mark.slow

ELDERLY = "Can foreign companies run elderly care homes?"


@pytest.fixture(scope="module")
def client(live_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=120) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict:
    """The JSON error body, after checking the status and that it is JSON for people."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text
    return body


# --- search ------------------------------------------------------------------------------------
def test_search_contract(client):
    response = client.post("/api/search", json={"query": ELDERLY, "top_k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == ELDERLY
    assert body["in_scope"] is True and body["coverage"] == "full"
    assert body["decision"]["coverage"] == "full"
    assert 1 <= len(body["results"]) <= 5
    for hit in body["results"]:
        assert isinstance(hit["task"], int | None)
        assert isinstance(hit["section"], str) and hit["section"]
        assert isinstance(hit["text"], str) and hit["text"]
        assert isinstance(hit["text_en"], str | None)
        assert isinstance(hit["score"], float)
    assert 17 in [hit["task"] for hit in body["results"][:3]]
    task17 = next(h for h in body["results"] if h["task"] == 17)
    assert "养老机构" in task17["text"] and "elderly care" in task17["text_en"]


def test_search_defaults_to_ten_results_and_honours_top_k(client):
    assert len(client.post("/api/search", json={"query": "外资"}).json()["results"]) == 10
    assert len(client.post("/api/search", json={"query": "外资", "top_k": 1}).json()["results"]) == 1
    assert len(client.post("/api/search", json={"query": "外资", "top_k": 50}).json()["results"]) >= 11


def test_search_chinese_and_out_of_scope(client):
    zh = client.post("/api/search", json={"query": "外资能办医院吗？"}).json()
    assert zh["lang"] == "zh" and zh["results"]
    off = client.post("/api/search", json={"query": "What is the best recipe for chocolate cake?"}).json()
    assert off["in_scope"] is False and off["coverage"] == "none"


# --- ask -----------------------------------------------------------------------------------------
def test_ask_contract_english(client):
    response = client.post("/api/ask", json={"question": ELDERLY})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"answer", "citations", "in_scope", "coverage", "lang", "conversation_id",
                         "conversation_reset"}
    assert body["lang"] == "en"
    assert body["in_scope"] is True and body["coverage"] == "full" and body["conversation_reset"] is False
    assert isinstance(body["answer"], str) and "Task 17" in body["answer"]
    assert isinstance(body["conversation_id"], str) and body["conversation_id"]
    cited = [c["task"] for c in body["citations"]]
    assert 17 in cited
    for c in body["citations"]:
        assert {"task", "section", "text", "text_en"} <= set(c)
    task17 = next(c for c in body["citations"] if c["task"] == 17)
    assert "养老机构" in task17["text"] and "elderly care" in task17["text_en"]


def test_ask_chinese_answers_in_chinese(client):
    body = client.post("/api/ask", json={"question": "外资能办医院吗？"}).json()
    assert body["lang"] == "zh"
    assert body["citations"]
    assert "第" in body["answer"] and "项" in body["answer"]


def test_ask_conversation_round_trip_and_follow_up(client):
    first = client.post("/api/ask", json={"question": ELDERLY}).json()
    conversation = first["conversation_id"]
    follow = client.post("/api/ask", json={"question": "What about hospitals?", "conversation_id": conversation})
    assert follow.status_code == 200, follow.text
    body = follow.json()
    assert body["conversation_id"] == conversation and body["conversation_reset"] is False
    assert body["lang"] == "en" and body["citations"]
    assert body["answer"]
    assert body["resolved_query"]  # the follow-up was read in the context of the first question
    # an unknown (e.g. expired) id is answered in a fresh conversation, whose id comes back
    fresh = client.post("/api/ask", json={"question": "第17项是什么", "conversation_id": "no-such-conversation"})
    assert fresh.status_code == 200
    assert fresh.json()["conversation_id"] not in ("", "no-such-conversation", conversation)
    assert fresh.json()["conversation_reset"] is True
    assert 17 in [c["task"] for c in fresh.json()["citations"]]


# --- tasks and categories -----------------------------------------------------------------------------
def test_task_by_number(client):
    body = client.get("/api/tasks/17").json()
    assert body["task"] == 17 and body["category_no"] == 2
    assert "养老机构" in body["text"] and "elderly care" in body["text_en"]
    assert body["category_en"]


@pytest.mark.parametrize("number", [0, 112, 999, -3])
def test_unknown_task_is_a_clear_404(client, number):
    body = _error(client.get(f"/api/tasks/{number}"), 404)
    assert f"no task {number}" in body["error"] and "1-111" in body["error"]


@pytest.mark.parametrize("number", ["abc", "17.5", "十七"])
def test_non_integer_task_is_422(client, number):
    body = _error(client.get(f"/api/tasks/{number}"), 422)
    assert "'number' must be an integer" in body["error"]
    assert body["detail"][0]["loc"] == ["path", "number"]


def test_tasks_list_and_by_category(client):
    every = client.get("/api/tasks").json()
    assert [t["task"] for t in every] == list(range(1, 112))
    medical = client.get("/api/tasks", params={"category": 2}).json()
    assert medical and all(t["category_no"] == 2 for t in medical)
    assert 17 in [t["task"] for t in medical]
    assert "no category 15" in _error(client.get("/api/tasks", params={"category": 15}), 404)["error"]
    assert "'category' must be an integer" in _error(client.get("/api/tasks", params={"category": "x"}), 422)["error"]


def test_categories(client):
    categories = client.get("/api/categories").json()
    assert [c["number"] for c in categories] == list(range(1, 15))
    assert all(c["title"] and c["title_en"] and c["label"] for c in categories)
    assert sorted(n for c in categories for n in c["tasks"]) == list(range(1, 112))
    assert 17 in categories[1]["tasks"]


# --- feedback, health, docs ------------------------------------------------------------------------------
def test_feedback_is_stored(client, settings):
    store = FeedbackStore(settings.feedback_path)
    before = store.count() if settings.feedback_path.exists() else 0
    payload = {"rating": "down", "reason": "missed the hospital task", "question": ELDERLY,
               "answer": "Yes [Task 17].", "citations": [{"task": 17, "section": "x", "text": "y", "text_en": None}],
               "conversation_id": "conv-feedback"}
    response = client.post("/api/feedback", json=payload)
    assert response.status_code == 201, response.text
    row = response.json()["id"]
    assert response.json()["status"] == "stored"
    minimal = client.post("/api/feedback", json={"rating": "up", "question": "q", "answer": "a"})
    assert minimal.status_code == 201
    assert store.count() == before + 2
    stored = next(r for r in store.records() if r.id == row)
    assert (stored.rating, stored.reason, stored.question, stored.conversation_id) == (
        "down", "missed the hospital task", ELDERLY, "conv-feedback")
    assert stored.citations[0]["task"] == 17
    store.close()


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["doc_number"] == "厦府〔2026〕88号"
    assert body["tasks"] == 111 and body["categories"] == 14
    assert body["index"]["built_at"] and body["index"]["units"] >= 111
    assert body["embedders"] and body["answers"] == "ready"


def test_openapi_docs(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "cdn." not in docs.text and "https://" not in docs.text  # served offline
    script = client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    schema = client.get("/openapi.json").json()
    for path in ("/api/search", "/api/ask", "/api/tasks/{number}", "/api/tasks", "/api/categories",
                 "/api/feedback", "/healthz"):
        assert path in schema["paths"]
    assert schema["components"]["schemas"]["SearchRequest"]["additionalProperties"] is False


def test_ui_is_mounted_at_root(client):
    page = client.get("/")
    assert page.status_code == 200 and "gradio" in page.text.lower()


# --- validation -------------------------------------------------------------------------------------------
LONG = "养" * 2001
INVALID = [
    ("/api/search", {"query": ""}, "'query' must not be empty"),
    ("/api/search", {"query": "   \n\t "}, "'query' must not be empty"),
    ("/api/search", {"query": LONG}, "'query' is too long: 2001 characters, at most 2000 allowed"),
    ("/api/search", {"query": "x", "top_k": 0}, "'top_k' must be between 1 and 50, not 0"),
    ("/api/search", {"query": "x", "top_k": 51}, "'top_k' must be between 1 and 50, not 51"),
    ("/api/search", {"query": "x", "top_k": -1}, "'top_k' must be between 1 and 50, not -1"),
    ("/api/search", {"query": "x", "top_k": "many"}, "'top_k' must be an integer"),
    ("/api/search", {"query": "x", "topk": 5}, "unknown field 'topk'"),
    ("/api/search", {"top_k": 5}, "missing required field 'query'"),
    ("/api/search", {"query": 17}, "'query' must be a string"),
    ("/api/ask", {"question": ""}, "'question' must not be empty"),
    ("/api/ask", {"question": "  　 "}, "'question' must not be empty"),
    ("/api/ask", {"question": LONG}, "'question' is too long: 2001 characters, at most 2000 allowed"),
    ("/api/ask", {"question": "hi", "lang": "en"}, "unknown field 'lang'"),
    ("/api/ask", {"question": "hi", "conversation_id": "c" * 129}, "'conversation_id' is too long"),
    ("/api/ask", {}, "missing required field 'question'"),
    ("/api/feedback", {"rating": "meh", "question": "q", "answer": "a"}, "'rating' must be 'up' or 'down'"),
    ("/api/feedback", {"rating": "up", "question": " ", "answer": "a"}, "'question' must not be empty"),
    ("/api/feedback", {"rating": "up", "question": "q"}, "missing required field 'answer'"),
    ("/api/feedback", {"rating": "up", "question": "q", "answer": "a", "extra": 1}, "unknown field 'extra'"),
    ("/api/feedback", {"rating": "up", "question": "q", "answer": "a", "citations": "17"},
     "'citations': input should be a valid list"),
]


@pytest.mark.parametrize(("path", "payload", "message"), INVALID, ids=[f"{p}:{m[:30]}" for p, _, m in INVALID])
def test_validation_errors_are_readable(client, path, payload, message):
    body = _error(client.post(path, json=payload), 422)
    assert message in body["error"]
    assert isinstance(body["detail"], list) and body["detail"]


def test_question_of_exactly_2000_characters_is_accepted(client):
    assert client.post("/api/search", json={"query": "外" * 2000, "top_k": 1}).status_code == 200


def test_several_problems_are_reported_together(client):
    body = _error(client.post("/api/search", json={"query": " ", "top_k": 0, "x": 1}), 422)
    assert body["error"] == "'query' must not be empty; 'top_k' must be between 1 and 50, not 0; unknown field 'x'"


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", "the request body is not valid JSON"),
    (b"[1, 2]", "the request body must be a JSON object"),
    (b"\"question\"", "the request body must be a JSON object"),
    (b"", "missing required field"),
])
def test_malformed_bodies(client, content, message):
    body = _error(client.post("/api/ask", content=content, headers={"content-type": "application/json"}), 422)
    assert message in body["error"]


def test_unknown_endpoint_and_wrong_method_are_json(client):
    assert "no such endpoint" in _error(client.get("/api/nothing"), 404)["error"]
    wrong = client.get("/api/search")
    assert "use POST" in _error(wrong, 405)["error"]
    assert wrong.headers["allow"] == "POST"


def test_no_request_causes_a_500(client):
    """A spread of odd inputs: every answer is a deliberate 2xx/4xx with a JSON body."""
    odd_values = [None, True, 0, -1, 10**30, 1.5, "", " ", "\x00", "\ud7ff" * 3, "<script>alert(1)</script>",
                  "'; DROP TABLE feedback; --", [], {}, ["x"], {"a": {"b": []}}, "第999项是什么", "Task 0"]
    calls = []
    for value in odd_values:
        calls += [("POST", "/api/search", {"query": value}), ("POST", "/api/search", {"query": "x", "top_k": value}),
                  ("POST", "/api/ask", {"question": value}),
                  ("POST", "/api/ask", {"question": "第17项", "conversation_id": value}),
                  ("POST", "/api/feedback", {"rating": "up", "question": "q", "answer": "a", "citations": value}),
                  ("POST", "/api/feedback", {"rating": value, "question": value, "answer": value})]
    for path in ("/api/tasks/1e3", "/api/tasks/%00", "/api/tasks/99999999999999999999999", "/api/tasks?category=-1",
                 "/api/tasks?category=99999999999999999999999", "/api/categories?x=1", "/healthz?x=1"):
        calls.append(("GET", path, None))
    for method, path, payload in calls:
        response = client.request(method, path, json=payload)
        assert response.status_code < 500, (method, path, payload, response.text)
        body = response.json()
        if response.status_code >= 400:
            assert isinstance(body["error"], str), body


# --- failure modes on separate servers --------------------------------------------------------------------
class _BrokenEngine:
    """The real engine whose search fails unexpectedly (to exercise the catch-all handler)."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def search(self, *args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")


def test_unexpected_errors_are_a_bare_json_500_and_logged(settings, engine, serve_app, caplog):
    app = create_app(settings, engine=_BrokenEngine(engine), ui=False)
    with serve_app(app) as url, caplog.at_level(logging.ERROR, logger="assistant.api.errors"):
        response = httpx.post(f"{url}/api/search", json={"query": ELDERLY}, timeout=60)
        assert response.status_code == 500
        assert response.json() == {"error": "internal error"}
        assert "secret" not in response.text and "Traceback" not in response.text
        assert httpx.get(f"{url}/api/tasks/17", timeout=60).status_code == 200  # the service keeps working
    logged = [r for r in caplog.records if r.name == "assistant.api.errors" and r.exc_info]
    assert logged and "secret internal detail" in str(logged[0].exc_info[1])


def test_unusable_feedback_database_is_a_503_and_nothing_else_breaks(settings, engine, serve_app, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = FeedbackStore(blocker / "feedback.sqlite3")
    with serve_app(create_app(settings, engine=engine, feedback_store=store, ui=False)) as url:
        response = httpx.post(f"{url}/api/feedback", json={"rating": "up", "question": "q", "answer": "a"}, timeout=60)
        body = _error(response, 503)
        assert body["error"].startswith("feedback could not be stored: feedback database")
        assert httpx.post(f"{url}/api/search", json={"query": ELDERLY}, timeout=60).status_code == 200


def test_unusable_conversation_store_is_a_503_not_a_new_conversation(settings, engine, serve_app, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    broken = settings.model_copy(update={"conversation_db": blocker / "conversations.sqlite3"})
    with serve_app(create_app(broken, engine=engine, ui=False)) as url:
        response = httpx.post(f"{url}/api/ask", json={"question": ELDERLY, "conversation_id": "abc"}, timeout=60)
        body = _error(response, 503)
        assert body["error"].startswith("the conversation could not be read or stored")
        assert "conversation database" in body["error"] and response.headers["retry-after"] == "5"
        assert httpx.post(f"{url}/api/search", json={"query": ELDERLY}, timeout=60).status_code == 200


class _SlowEngine(_BrokenEngine):
    """The real engine, one second per search (requests pile up)."""

    def search(self, *args, **kwargs):
        time.sleep(1.0)
        return self._engine.search(*args, **kwargs)


def test_overload_is_shed_with_503_and_retry_after(settings, engine, serve_app):
    """More slow requests at once than ASSISTANT_MAX_IN_FLIGHT: the excess is refused at once, health answers."""
    import concurrent.futures

    bounded = settings.model_copy(update={"max_in_flight": 2})
    with serve_app(create_app(bounded, engine=_SlowEngine(engine), ui=False)) as url, \
            concurrent.futures.ThreadPoolExecutor(12) as pool:
        def timed_search() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = httpx.post(f"{url}/api/search", json={"query": ELDERLY, "top_k": 3}, timeout=60)
            return response, time.monotonic() - started

        futures = [pool.submit(timed_search) for _ in range(10)]
        time.sleep(0.3)
        health_started = time.monotonic()
        health = httpx.get(f"{url}/healthz", timeout=10)
        health_seconds = time.monotonic() - health_started
        done = [f.result() for f in futures]
    assert health.status_code == 200 and health_seconds < 1.0  # never shed, never queued behind searches
    shed = [(r, t) for r, t in done if r.status_code == 503]
    served = [r for r, _ in done if r.status_code == 200]
    assert served and len(served) <= 4, [r.status_code for r, _ in done]
    assert len(shed) >= 6
    for response, seconds in shed:
        assert response.headers["retry-after"] == "1"
        assert "service busy" in _error(response, 503)["error"]
        assert seconds < 0.9  # at once, not after waiting for a slot


def test_api_key_body_size_and_rate_limit(settings, engine, serve_app):
    guarded = settings.model_copy(update={"api_key": "s3cret", "max_body_bytes": 2048, "rate_limit_per_minute": 6})
    with serve_app(create_app(guarded, engine=engine, ui=False)) as url, httpx.Client(base_url=url) as c:
        assert c.get("/healthz").status_code == 200  # health checks need no key
        assert "API key" in _error(c.get("/api/tasks/17"), 401)["error"]
        assert "API key" in _error(c.get("/api/tasks/17", headers={"X-API-Key": "wrong"}), 401)["error"]
        assert c.get("/api/tasks/17", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/api/tasks/17", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        big = c.post("/api/search", headers={"X-API-Key": "s3cret"}, json={"query": "x" * 3000})
        assert "too large" in _error(big, 413)["error"]
        statuses = [c.get("/api/categories", headers={"X-API-Key": "s3cret"}).status_code for _ in range(6)]
        assert statuses.count(429) >= 1
        limited = c.get("/api/categories", headers={"X-API-Key": "s3cret"})
        assert "too many requests" in _error(limited, 429)["error"] and int(limited.headers["retry-after"]) >= 1


def test_lifespan_builds_a_missing_index_and_loads_once(settings, serve_app, tmp_path, monkeypatch):
    """No engine given and no index on disk: start-up builds it; requests never load anything."""
    from assistant.retrieval.engine import SearchEngine

    loads = []
    real_load = SearchEngine.load.__func__

    def counting_load(cls, *args, **kwargs):
        loads.append(time.monotonic())
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(SearchEngine, "load", classmethod(counting_load))
    fresh = settings.model_copy(update={"index_dir": tmp_path / "index", "feedback_db": tmp_path / "fb.sqlite3"})
    with serve_app(create_app(fresh, ui=False), timeout=600) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert (tmp_path / "index" / "current" / "manifest.json").exists()
        assert c.get("/healthz").json()["status"] == "ok"
        for _ in range(3):
            assert c.post("/api/search", json={"query": ELDERLY, "top_k": 3}).status_code == 200
        assert c.post("/api/ask", json={"question": ELDERLY}).status_code == 200
    assert len(loads) == 1


# --- the CLI --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_serve(cli_env, engine, workers, tmp_path):
    """``policy-assistant serve`` on 127.0.0.1 (one process, or uvicorn workers via the app factory)."""
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    cli = [str(Path(sys.executable).with_name("policy-assistant"))]
    if not Path(cli[0]).exists():
        cli = [sys.executable, "-m", "assistant.cli"]
    proc = subprocess.Popen([*cli, "serve", "--port", str(port), "--workers", str(workers)], env=cli_env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert health is not None and health.status_code == 200, (tmp_path / "serve.log").read_text()
        assert health.json()["doc_number"] == "厦府〔2026〕88号"
        hits = httpx.post(f"http://127.0.0.1:{port}/api/search", json={"query": ELDERLY, "top_k": 3}, timeout=60)
        assert 17 in [h["task"] for h in hits.json()["results"]]
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()

