"""Safe defaults: loopback binding, optional API key, body size and per-client rate limits, closed CORS,
no Gradio share link, and logs without feedback text unless asked for. Real servers, real HTTP."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assistant.api.app import create_app
from assistant.config import Settings
from assistant.feedback import FeedbackStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ELDERLY = "Can foreign companies run elderly care homes?"


@pytest.fixture
def clean_env(monkeypatch) -> None:
    """No ASSISTANT_* variables: what a fresh deployment gets."""
    import os

    for name in list(os.environ):
        if name.startswith("ASSISTANT_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_safe_ones(clean_env):
    defaults = Settings()
    assert defaults.host == "127.0.0.1"
    assert defaults.api_key is None  # optional: set ASSISTANT_API_KEY to require it
    assert defaults.max_body_bytes == 64_000
    assert defaults.rate_limit_per_minute == 0  # configurable (ASSISTANT_RATE_LIMIT_PER_MINUTE)
    assert defaults.cors_origins == []
    assert defaults.log_feedback_text is False
    assert defaults.max_in_flight == 8  # per worker; beyond it /api answers 503 + Retry-After at once
    assert defaults.state_dsn is None  # conversations and feedback in local SQLite files unless a DSN is set


def test_the_guards_are_configured_from_the_environment(clean_env, monkeypatch):
    monkeypatch.setenv("ASSISTANT_API_KEY", "k-123")
    monkeypatch.setenv("ASSISTANT_RATE_LIMIT_PER_MINUTE", "30")
    monkeypatch.setenv("ASSISTANT_MAX_BODY_BYTES", "8192")
    monkeypatch.setenv("ASSISTANT_CORS_ORIGINS", "https://hotline.example, https://portal.example")
    monkeypatch.setenv("ASSISTANT_LOG_FEEDBACK_TEXT", "1")
    monkeypatch.setenv("ASSISTANT_HOST", "0.0.0.0")
    configured = Settings()
    assert (configured.api_key, configured.rate_limit_per_minute, configured.max_body_bytes) == ("k-123", 30, 8192)
    assert configured.cors_origins == ["https://hotline.example", "https://portal.example"]
    assert configured.log_feedback_text is True and configured.host == "0.0.0.0"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                if len(address) == 8:
                    found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add("ipv6:" + address)
    return found


def test_serve_binds_loopback_only_by_default(engine, cli_env, serve_cli, tmp_path):
    env = {k: v for k, v in cli_env.items() if k not in ("ASSISTANT_HOST", "ASSISTANT_API_KEY")}
    log = tmp_path / "serve.log"
    with serve_cli(env, log_path=log) as url:
        port = int(url.rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"127.0.0.1"}
    assert f"http://127.0.0.1:{port}" in log.read_text()


# --- the API key -----------------------------------------------------------------------------------------
ROUTES = [("GET", "/api/tasks", None), ("GET", "/api/tasks/17", None), ("GET", "/api/categories", None),
          ("POST", "/api/search", {"query": ELDERLY}), ("POST", "/api/ask", {"question": ELDERLY}),
          ("POST", "/api/feedback", {"rating": "up", "question": "q", "answer": "a"}),
          ("GET", "/api/no-such-thing", None), ("DELETE", "/api/tasks/17", None)]


@pytest.fixture(scope="module")
def keyed(settings, engine, serve_app, tmp_path_factory) -> Iterator[str]:
    keyed = settings.model_copy(update={"api_key": "s3cret-key"})
    store = FeedbackStore(tmp_path_factory.mktemp("keyed") / "feedback.sqlite3")
    with serve_app(create_app(keyed, engine=engine, feedback_store=store)) as url:
        yield url


@pytest.mark.parametrize("method,path,payload", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_api_key_guards_every_api_route(keyed, method, path, payload):
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        response = httpx.request(method, keyed + path, json=payload, headers=headers, timeout=60)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert "API key" in response.json()["error"] and response.headers["www-authenticate"] == "Bearer"
    in_query = httpx.request(method, f"{keyed}{path}?api_key=s3cret-key", json=payload, timeout=60)
    assert in_query.status_code == 401  # keys in URLs end up in logs: not accepted
    for headers in ({"X-API-Key": "s3cret-key"}, {"Authorization": "Bearer s3cret-key"}):
        response = httpx.request(method, keyed + path, json=payload, headers=headers, timeout=60)
        assert response.status_code != 401 and response.status_code < 500, response.text


def test_health_and_ui_need_no_key(keyed):
    assert httpx.get(f"{keyed}/healthz", timeout=60).status_code == 200
    assert httpx.get(f"{keyed}/", timeout=60).status_code == 200


# --- rate limit and CORS ------------------------------------------------------------------------------------
def test_rate_limit_is_per_client_with_a_json_429(settings, engine, serve_app):
    limited = settings.model_copy(update={"rate_limit_per_minute": 5})
    # uvicorn takes the client address from X-Forwarded-For when the connection comes from a trusted
    # proxy (127.0.0.1 by default): two callers behind a local reverse proxy
    first, second = {"X-Forwarded-For": "127.0.0.2"}, {"X-Forwarded-For": "127.0.0.3"}
    with serve_app(create_app(limited, engine=engine, ui=False)) as url, httpx.Client(base_url=url) as client:
        statuses = [client.get("/api/tasks/17", headers=first).status_code for _ in range(5)]
        assert statuses == [200] * 5
        refused = client.post("/api/search", json={"query": ELDERLY}, headers=first)
        assert refused.status_code == 429 and refused.headers["content-type"].startswith("application/json")
        assert "too many requests: at most 5 per minute" in refused.json()["error"]
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        assert client.get("/api/tasks/17", headers=second).status_code == 200  # others are not affected
        assert client.get("/healthz", headers=first).status_code == 200  # health checks are not limited


def _cors_headers(url: str, origin: str) -> tuple[httpx.Response, httpx.Response]:
    preflight = httpx.options(f"{url}/api/search", timeout=60, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    simple = httpx.post(f"{url}/api/search", json={"query": ELDERLY}, headers={"Origin": origin}, timeout=60)
    return preflight, simple


def test_cors_is_closed_by_default(live_server):
    preflight, simple = _cors_headers(live_server, "https://evil.example")
    assert simple.status_code == 200
    for response in (preflight, simple):
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers


def test_cors_opens_only_to_configured_origins(settings, engine, serve_app):
    opened = settings.model_copy(update={"cors_origins": ["https://hotline.example"]})
    with serve_app(create_app(opened, engine=engine, ui=False)) as url:
        preflight, simple = _cors_headers(url, "https://hotline.example")
        assert preflight.headers["access-control-allow-origin"] == "https://hotline.example"
        assert simple.headers["access-control-allow-origin"] == "https://hotline.example"
        preflight, simple = _cors_headers(url, "https://evil.example")
        assert "access-control-allow-origin" not in preflight.headers
        assert "access-control-allow-origin" not in simple.headers


# --- no share link -------------------------------------------------------------------------------------------
def test_standalone_ui_never_opens_a_share_link(engine, settings, monkeypatch, tmp_path):
    """``python ui/app.py`` with GRADIO_SHARE=True in the environment still makes no tunnel."""
    import gradio as gr
    import gradio.networking

    from assistant.config import get_settings
    from assistant.retrieval.engine import SearchEngine

    tunnels: list[tuple] = []
    launched: list[gr.Blocks] = []

    def no_tunnel(*args, **kwargs):
        tunnels.append(args)
        raise RuntimeError("a share tunnel was requested")

    real_launch = gr.Blocks.launch

    def launch_without_blocking(self, *args, **kwargs):
        launched.append(self)
        kwargs["prevent_thread_lock"] = True
        return real_launch(self, *args, **kwargs)

    monkeypatch.setenv("GRADIO_SHARE", "True")
    monkeypatch.setenv("ASSISTANT_INDEX_DIR", str(settings.index_path))
    monkeypatch.setenv("ASSISTANT_FEEDBACK_DB", str(tmp_path / "feedback.sqlite3"))
    monkeypatch.setenv("ASSISTANT_HOST", "127.0.0.1")
    monkeypatch.setenv("ASSISTANT_PORT", str(_free_port()))
    monkeypatch.setattr(gradio.networking, "setup_tunnel", no_tunnel)
    monkeypatch.setattr(gr.Blocks, "launch", launch_without_blocking)
    monkeypatch.setattr(SearchEngine, "load", classmethod(lambda cls, *a, **k: engine))
    get_settings.cache_clear()
    spec = importlib.util.spec_from_file_location("ui_app", REPO / "ui" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.main()
        assert launched and launched[0].share is False and launched[0].share_url is None
        assert tunnels == []
        assert httpx.get(launched[0].local_url, timeout=60).status_code == 200
    finally:
        for blocks in launched:
            blocks.close()
        get_settings.cache_clear()


def test_mounted_ui_has_no_share_link(settings, engine):
    app = create_app(settings, engine=engine)
    mounted = [route.app for route in app.routes if hasattr(route, "app") and hasattr(route.app, "get_blocks")]
    assert mounted and not mounted[0].get_blocks().share


# --- logs -----------------------------------------------------------------------------------------------------
MARKERS = {"question": "QUESTION-MARKER-5f1c 外资能办医院吗？", "answer": "ANSWER-MARKER-a9e2 [Task 16]",
           "reason": "REASON-MARKER-77d0 my phone is 13800000000"}


def _logged_text(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r}" for r in records)


@pytest.mark.parametrize("log_text", [False, True], ids=["default", "ASSISTANT_LOG_FEEDBACK_TEXT"])
def test_logs_hold_feedback_text_only_when_asked(settings, engine, serve_app, tmp_path, caplog, log_text):
    chosen = settings.model_copy(update={"log_feedback_text": log_text})
    store = FeedbackStore(tmp_path / "feedback.sqlite3")
    with caplog.at_level(logging.DEBUG), serve_app(create_app(chosen, engine=engine, feedback_store=store,
                                                              ui=False)) as url:
        response = httpx.post(f"{url}/api/feedback", json={"rating": "down", **MARKERS}, timeout=60)
        assert response.status_code == 201
    logged = _logged_text(caplog.records)
    assert "feedback down stored" in logged  # the event itself is logged either way
    if log_text:
        assert MARKERS["question"] in logged and MARKERS["reason"] in logged
    else:
        for marker in MARKERS.values():
            assert marker.split()[0] not in logged


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
