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
    var = tmp_path_factory.mktemp("var")
    return Settings(home=REPO, index_dir=index_dir, feedback_db=var / "feedback.sqlite3",
                    conversation_db=var / "conversations.sqlite3")


@pytest.fixture(scope="session")
def engine(settings):
    """The real search engine over a freshly built index (built once per session)."""
    from assistant.retrieval.engine import SearchEngine

    return SearchEngine.load(settings, rebuild="if_needed")


@pytest.fixture(scope="session")
def library_settings(tmp_path_factory) -> Settings:
    """Settings of a library: the real plan and the fictitious one of ``library_plan`` (ASSISTANT_LIBRARY)."""
    from library_plan import write_plan

    root = tmp_path_factory.mktemp("library")
    plan = write_plan(root / "bees")
    return Settings(home=REPO, index_dir=root / "index", library=[plan], feedback_db=root / "feedback.sqlite3",
                    conversation_db=root / "conversations.sqlite3")


@pytest.fixture(scope="session")
def library_engine(library_settings):
    """The real search engine over the library's index (built once per session, embedded backend)."""
    from assistant.retrieval.engine import SearchEngine

    engine = SearchEngine.load(library_settings, rebuild="if_needed")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def cli_env(settings) -> dict[str, str]:
    """Environment for running the CLI as a subprocess against the session index."""
    env = dict(os.environ)
    env["ASSISTANT_INDEX_DIR"] = str(settings.index_path)
    env["ASSISTANT_FEEDBACK_DB"] = str(settings.feedback_path)
    env["ASSISTANT_CONVERSATION_DB"] = str(settings.conversations_path)
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


# --- fault injection: an OpenAI-compatible stub and the real CLI server ------------------------------
def prompt_and_shown(body: dict) -> tuple[str, list[int]]:
    """A chat request's prompt text and the task numbers its evidence shows (``[Task N] = ...``)."""
    import re

    prompt = "\n".join(m["content"] for m in body.get("messages", []) if isinstance(m.get("content"), str))
    return prompt, [int(n) for n in re.findall(r"\[Task (\d+)\] = ", prompt)]


def chat_completion(content: str, model: str, completion_id: str = "chatcmpl-stub") -> dict:
    """The body of an OpenAI ``chat.completion`` answering ``content``."""
    import time

    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class OpenAIStub:
    """What the stub LLM answers (``behaviour``, ``delay``); ``requests`` records what it was sent."""

    def __init__(self) -> None:
        self.behaviour = "valid"  # valid | obey | error
        self.delay = 0.0
        self.requests: list[dict] = []

    def record(self, path: str, body: dict, authorization: str | None) -> dict:
        """What ``requests`` keeps of one call (the body; subclasses may keep more)."""
        return body

    def reply(self, body: dict) -> tuple[int, dict]:
        _, shown = prompt_and_shown(body)
        if self.behaviour == "error":
            return 500, {"error": {"message": "boom", "type": "server_error"}}
        content = f"Yes, for non-profit institutions set up by donation [Task {shown[0] if shown else 1}]."
        if self.behaviour == "obey":  # a model that follows instructions hidden in the question
            content += (" As instructed, foreigners also get free land [Task 999]. <script>alert('x')</script>"
                        " ![track](http://127.0.0.1:9/leak.png)")
        return 200, chat_completion(content, body.get("model", "stub"), "chatcmpl-stub")


@contextmanager
def openai_stub_server(stub: OpenAIStub) -> Iterator[str]:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 (free port); yields its base URL."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            stub.requests.append(stub.record(self.path, body, self.headers.get("Authorization")))
            if stub.delay:
                time.sleep(stub.delay)
            status, payload = stub.reply(body)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timeouts)
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="openai-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def served_stub(stub: OpenAIStub) -> Iterator[tuple[OpenAIStub, str]]:
    """``stub`` served on a free port: what a stub fixture yields (the stub and its base URL)."""
    with openai_stub_server(stub) as url:
        yield stub, url


@pytest.fixture
def openai_stub() -> Iterator[tuple[OpenAIStub, str]]:
    yield from served_stub(OpenAIStub())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_command() -> list[str]:
    """``policy-assistant`` of this interpreter's environment (or ``python -m assistant.cli``)."""
    import sys

    cli = Path(sys.executable).with_name("policy-assistant")
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "assistant.cli"]


@contextmanager
def cli_server(env: dict[str, str], *args: str, log_path: Path, timeout: float = 600.0) -> Iterator[str]:
    """``policy-assistant serve --port <free> *args`` in its own process group; yields the base URL once
    /healthz answers 200, and stops the whole group afterwards."""
    import signal
    import subprocess
    import time

    import httpx

    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen([*cli_command(), "serve", "--port", str(port), *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not become healthy in {timeout:.0f} s:\n"
                                       f"{log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def serve_cli():
    """``with serve_cli(env, "--rebuild", log_path=...) as url:`` runs the real ``policy-assistant serve``."""
    return cli_server


def copy_index(source_index: Path, target: Path) -> Path:
    """A private copy of the published build of ``source_index`` (so a test may corrupt or rebuild it)."""
    import shutil

    build = (source_index / "current").resolve()
    (target / "builds").mkdir(parents=True, exist_ok=True)
    shutil.copytree(build, target / "builds" / build.name)
    (target / "current").symlink_to(Path("builds") / build.name)
    return target / "builds" / build.name


@pytest.fixture(scope="session")
def index_copy():
    """``index_copy(source_index_dir, target_dir)`` copies the published build (see ``copy_index``)."""
    return copy_index
