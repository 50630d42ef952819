"""Faults a public service meets: a bad or missing index, a rebuild while serving, a dead or slow LLM,
a busy, locked or read-only feedback database. Real engine, real uvicorn (in-process or the CLI), real HTTP."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from assistant.api.app import create_app
from assistant.feedback import FeedbackStore

pytestmark = pytest.mark.slow

ELDERLY = "Can foreign companies run elderly care homes?"
QUESTIONS = [ELDERLY, "外资能办医院吗？", "第17项是什么", "外资做VPN持股上限多少?", "境外人员可以在厦门执业吗？",
             "What is the best recipe for chocolate cake?", "Which tasks are differentiated pilot tasks?"]


def _json_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message
    return message


def _env(cli_env: dict[str, str], folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in cli_env.items() if not k.startswith("ASSISTANT_")}
    env.update(ASSISTANT_INDEX_DIR=str(folder / "index"), ASSISTANT_FEEDBACK_DB=str(folder / "feedback.sqlite3"),
               **extra)
    return env


# --- the index at start ------------------------------------------------------------------------------------
def _corrupt_checksum(build: Path) -> str:
    with (build / "docstore.json").open("ab") as handle:  # one byte more: a torn or tampered file
        handle.write(b" ")
    return "does not match its checksum"


def _corrupt_manifest(build: Path) -> str:
    (build / "manifest.json").write_text("{ not json", encoding="utf-8")
    return "unreadable"


@pytest.mark.parametrize("corrupt", [_corrupt_checksum, _corrupt_manifest], ids=["altered-file", "bad-manifest"])
def test_corrupt_index_refuses_to_serve_with_a_clear_message(engine, settings, cli_env, index_copy, tmp_path,
                                                              corrupt):
    build = index_copy(settings.index_path, tmp_path / "index")
    expected = corrupt(build)
    done = subprocess.run([*_cli(), "serve", "--port", str(_port())], env=_env(cli_env, tmp_path),
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output
    assert "error:" in output and expected in output and "--rebuild" in output
    assert (tmp_path / "index" / "current").resolve() == build  # nothing was silently replaced


def test_corrupt_index_with_rebuild_is_rebuilt_and_served(engine, settings, cli_env, index_copy, serve_cli,
                                                          tmp_path):
    build = index_copy(settings.index_path, tmp_path / "index")
    _corrupt_checksum(build)
    log = tmp_path / "serve.log"
    with serve_cli(_env(cli_env, tmp_path), "--rebuild", log_path=log) as url:
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        assert health["index"]["build"] != build.name
        hits = httpx.post(f"{url}/api/search", json={"query": ELDERLY, "top_k": 3}, timeout=60).json()["results"]
        assert 17 in [h["task"] for h in hits]
    assert "Traceback" not in log.read_text()


# --- a missing index, then a rebuild while serving -------------------------------------------------------
@pytest.fixture(scope="module")
def fresh_server(cli_env, serve_cli, tmp_path_factory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """``policy-assistant serve`` started on an empty index folder, watching it every second."""
    folder = tmp_path_factory.mktemp("fresh")
    env = _env(cli_env, folder, ASSISTANT_INDEX_WATCH_SECONDS="1")
    with serve_cli(env, log_path=folder / "serve.log") as url:
        yield url, folder, env
    assert "Traceback" not in (folder / "serve.log").read_text()


def test_missing_index_is_built_on_first_start(fresh_server):
    url, folder, _ = fresh_server
    published = (folder / "index" / "current").resolve()
    assert (published / "manifest.json").is_file()
    health = httpx.get(f"{url}/healthz", timeout=30).json()
    assert health["index"]["build"] == published.name
    assert health["index_watch"]["watch_seconds"] == 1
    answer = httpx.post(f"{url}/api/ask", json={"question": ELDERLY}, timeout=60).json()
    assert 17 in [c["task"] for c in answer["citations"]]


class Traffic:
    """Client threads sending a mix of requests until stopped; records every outcome and the build seen."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.outcomes: list[tuple[float, str, str]] = []  # (time, what, "ok" or the failure)
        self.builds: dict[int, list[str]] = {n: [] for n in range(threads)}  # per client, in order
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            step = number
            while not self._stop.is_set():
                step += 1
                question = f"{QUESTIONS[step % len(QUESTIONS)]} ({step})" if step % 3 else QUESTIONS[step % 7]
                calls = [("search", lambda q=question: client.post("/api/search", json={"query": q, "top_k": 5})),
                         ("ask", lambda q=question: client.post("/api/ask", json={"question": q})),
                         ("task", lambda: client.get("/api/tasks/17")),
                         ("health", lambda: client.get("/healthz"))]
                what, call = calls[step % len(calls)]
                try:
                    response = call()
                    outcome = "ok" if response.status_code == 200 else f"HTTP {response.status_code}: {response.text}"
                    if what == "health" and response.status_code == 200:
                        self.builds[number].append(response.json()["index"]["build"])
                    if what == "search" and response.status_code == 200 and not response.json()["results"]:
                        outcome = "no results"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                self.outcomes.append((time.monotonic(), what, outcome))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)


def test_rebuild_while_serving_swaps_the_index_without_a_failed_request(fresh_server):
    url, folder, env = fresh_server
    old = httpx.get(f"{url}/healthz", timeout=30).json()["index"]["build"]
    with Traffic(url) as traffic:
        time.sleep(2)
        started = time.monotonic()
        ingest = subprocess.run([*_cli(), "ingest"], env=env, capture_output=True, text=True, timeout=900)
        rebuilt = time.monotonic()
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        new = (folder / "index" / "current").resolve().name
        assert new != old
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/healthz", timeout=30).json()["index"]["build"] != new:
            assert time.monotonic() < deadline, "the service did not swap in the new build"
            time.sleep(0.5)
        swapped = time.monotonic()
        time.sleep(3)  # and keep answering from the new index
    failures = [o for o in traffic.outcomes if o[2] != "ok"]
    assert failures == [], failures[:5]
    during = [o for o in traffic.outcomes if started <= o[0] <= rebuilt]
    after = [o for o in traffic.outcomes if o[0] > swapped]
    assert Counter(what for _, what, _ in during).keys() >= {"search", "ask"}, "no traffic during the rebuild"
    assert after, "no traffic after the swap"
    # each client saw the old build, then the new one, never back: one atomic swap
    for seen in traffic.builds.values():
        assert seen and seen[0] == old and seen[-1] == new, seen
        assert seen == [old] * seen.index(new) + [new] * (len(seen) - seen.index(new)), seen
    health = httpx.get(f"{url}/healthz", timeout=30).json()
    assert health["index_watch"]["swaps"] >= 1 and health["index_watch"]["last_error"] is None


def test_watcher_refuses_a_corrupt_build_and_keeps_serving(engine, settings, index_copy, tmp_path):
    """A broken build published by hand is logged and skipped; the next good one is swapped in."""
    from assistant.api.watcher import IndexWatcher
    from assistant.index.store import load_index
    from assistant.retrieval.engine import SearchEngine

    own = settings.model_copy(update={"index_dir": tmp_path / "index"})
    good = index_copy(settings.index_path, tmp_path / "index")
    embedders = {name: retriever.encoder.embedder for name, retriever in engine.retrievers.items()
                 if hasattr(retriever, "encoder") and not name.endswith("_k")}
    private = SearchEngine(own, engine.corpus, load_index(own, engine.corpus, embedders))
    watcher = IndexWatcher(private, interval=0)
    assert watcher.check() is False  # nothing new

    broken = good.with_name(good.name + "-broken")
    shutil.copytree(good, broken)
    _corrupt_checksum(broken)
    _point_current(tmp_path / "index", broken)
    assert watcher.check() is False
    assert private.index.folder == good and "checksum" in (watcher.last_error or "")
    assert 17 in [h.task for h in private.search(ELDERLY).hits[:3]]

    fixed = good.with_name(good.name + "-fixed")
    shutil.copytree(good, fixed)
    _point_current(tmp_path / "index", fixed)
    assert watcher.check() is True
    assert private.index.folder == fixed and watcher.swaps == 1 and watcher.last_error is None


def _point_current(root: Path, build: Path) -> None:
    staging = root / ".current-test"
    staging.symlink_to(build.relative_to(root))
    os.replace(staging, root / "current")


# --- the LLM endpoint down or slow ---------------------------------------------------------------------
def _generative(settings, url: str, timeout: float):
    return settings.model_copy(update={"llm_base_url": url, "llm_timeout": timeout, "llm_model": "stub"})


def test_llm_endpoint_down_falls_back_to_the_extractive_answer(settings, engine, serve_app):
    closed = f"http://127.0.0.1:{_port()}/v1"  # nothing listens there
    with serve_app(create_app(_generative(settings, closed, 3.0), engine=engine, ui=False)) as url:
        started = time.monotonic()
        response = httpx.post(f"{url}/api/ask", json={"question": ELDERLY}, timeout=60)
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "fallback"
    assert "generative answer was unavailable" in body["notice"]
    assert 17 in [c["task"] for c in body["citations"]] and "Task 17" in body["answer"]
    assert elapsed < 3.0 + 15  # the configured timeout is honoured (with room for a loaded machine)


@pytest.mark.parametrize("behaviour", ["slow", "error"])
def test_llm_slow_or_failing_falls_back_within_the_timeout(settings, engine, serve_app, openai_stub, behaviour):
    stub, llm_url = openai_stub
    stub.behaviour, stub.delay = ("valid", 30.0) if behaviour == "slow" else ("error", 0.0)
    with serve_app(create_app(_generative(settings, llm_url, 2.0), engine=engine, ui=False)) as url, \
            ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        pending = pool.submit(httpx.post, f"{url}/api/ask", json={"question": "外资能办医院吗？"}, timeout=60)
        # while the LLM stalls, other requests are answered
        assert httpx.post(f"{url}/api/search", json={"query": ELDERLY}, timeout=60).status_code == 200
        response = pending.result()
        elapsed = time.monotonic() - started
    assert stub.requests, "the LLM was never called"
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "fallback" and body["lang"] == "zh"
    assert body["notice"].startswith("生成式回答不可用") and body["citations"]
    assert elapsed < 2.0 + 15  # far below the stub's 30 s: the timeout cut it short


# --- the feedback store -------------------------------------------------------------------------------------
@contextmanager
def _feedback_server(settings, engine, serve_app, store: FeedbackStore) -> Iterator[httpx.Client]:
    with serve_app(create_app(settings, engine=engine, feedback_store=store, ui=False)) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client


def _rating(i: int) -> dict:
    return {"rating": "up" if i % 2 else "down", "question": f"question {i}", "answer": f"answer {i} [Task 17]",
            "reason": f"reason {i}", "citations": [{"task": 17}], "conversation_id": f"c{i}"}


def test_concurrent_feedback_writes_lose_nothing(settings, engine, serve_app, tmp_path):
    store = FeedbackStore(tmp_path / "feedback.sqlite3")
    count = 300
    roomy = settings.model_copy(update={"max_in_flight": 64})  # this test is about the store, not shedding
    with _feedback_server(roomy, engine, serve_app, store) as client, ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda i: client.post("/api/feedback", json=_rating(i)), range(count)))
    assert [r.status_code for r in responses] == [201] * count
    assert len({r.json()["id"] for r in responses}) == count
    reader = FeedbackStore(tmp_path / "feedback.sqlite3", read_only=True)
    try:
        assert reader.count() == count
        assert sorted(r.question for r in reader.records()) == sorted(f"question {i}" for i in range(count))
    finally:
        reader.close()


def test_locked_feedback_database_is_a_503_and_search_and_answers_still_work(settings, engine, serve_app,
                                                                             tmp_path):
    path = tmp_path / "feedback.sqlite3"
    quick = settings.model_copy(update={"feedback_db": path, "feedback_busy_timeout": 0.5})
    with _feedback_server(settings, engine, serve_app, FeedbackStore.from_settings(quick)) as client:
        assert client.post("/api/feedback", json=_rating(1)).status_code == 201
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
            message = _json_error(client.post("/api/feedback", json=_rating(2)), 503)
            assert "locked" in message and str(path) in message
            assert client.post("/api/search", json={"query": ELDERLY}).status_code == 200
            assert client.post("/api/ask", json={"question": ELDERLY}).status_code == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert client.post("/api/feedback", json=_rating(3)).status_code == 201  # recovers once released


@contextmanager
def _read_only_folder(folder: Path) -> Iterator[Path]:
    """A folder whose files cannot be written, even by root: a read-only tmpfs (or chmod when not root)."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        yield folder
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"running as root without permission to mount a read-only tmpfs: {mount.stderr!r}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _make_read_only(folder: Path) -> None:
    if os.geteuid() != 0:
        for path in [*folder.iterdir(), folder]:
            path.chmod(0o555 if path.is_dir() else 0o444)
    else:
        done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
        assert done.returncode == 0, done.stderr


def test_read_only_feedback_database_is_a_503_and_search_and_answers_still_work(settings, engine, serve_app,
                                                                                tmp_path):
    with _read_only_folder(tmp_path / "ro") as folder:
        writer = FeedbackStore(folder / "feedback.sqlite3")
        writer.add("up", "before", "it was writable")
        writer.close()
        _make_read_only(folder)
        try:
            with _feedback_server(settings, engine, serve_app, FeedbackStore(folder / "feedback.sqlite3")) as client:
                message = _json_error(client.post("/api/feedback", json=_rating(1)), 503)
                assert message.startswith("feedback could not be stored") and "read-only" in message
                assert client.post("/api/search", json={"query": ELDERLY}).status_code == 200
                assert client.post("/api/ask", json={"question": "外资能办医院吗？"}).status_code == 200
        finally:
            if os.geteuid() != 0:
                with suppress(OSError):
                    folder.chmod(0o755)


# --- helpers ------------------------------------------------------------------------------------------------
def _cli() -> list[str]:
    import sys

    cli = Path(sys.executable).with_name("policy-assistant")
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "assistant.cli"]


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
