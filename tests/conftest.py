"""Shared fixtures: one real index (real embedders, real FAISS, real BM25) per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from assistant.config import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory) -> Path:
    """A session-wide index folder, so tests never touch the developer's index/."""
    return tmp_path_factory.mktemp("index")


@pytest.fixture(scope="session")
def settings(index_dir, tmp_path_factory) -> Settings:
    return Settings(home=REPO, index_dir=index_dir,
                    feedback_db=tmp_path_factory.mktemp("var") / "feedback.sqlite3")


@pytest.fixture(scope="session")
def engine(settings):
    """The real search engine over a freshly built index (built once per session)."""
    from assistant.retrieval.engine import SearchEngine

    return SearchEngine.load(settings, rebuild="if_needed")


@pytest.fixture(scope="session")
def cli_env(settings) -> dict[str, str]:
    """Environment for running the CLI as a subprocess against the session index."""
    env = dict(os.environ)
    env["ASSISTANT_INDEX_DIR"] = str(settings.index_path)
    env["ASSISTANT_FEEDBACK_DB"] = str(settings.feedback_path)
    return env


# --- live HTTP servers (API, UI and browser tests) -------------------------------------------
@contextmanager
def running_server(app, timeout: float = 180.0) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on 127.0.0.1 (free port) in a thread; yields the base URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server failed to start (see the log above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test server did not start within {timeout:.0f} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="session")
def live_server(settings, engine) -> Iterator[str]:
    """The full service (API + Gradio UI) on a real uvicorn, sharing the session engine."""
    from assistant.api.app import create_app

    with running_server(create_app(settings, engine=engine)) as url:
        yield url


@pytest.fixture(scope="session")
def serve_app():
    """``with serve_app(app) as url:`` runs another app (other settings, fault injection) on a real server."""
    return running_server
