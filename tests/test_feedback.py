"""The SQLite feedback store: persistence, exports, concurrency, and clear failures."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from assistant.answer.types import Citation
from assistant.feedback import FeedbackStore, FeedbackUnavailable, neutralise_cell

CITATION = {"task": 17, "section": "提高医疗康养领域对外开放和服务保障水平",
            "text": "允许外商捐资举办非营利性养老机构……",
            "text_en": "Allow foreign investors to establish non-profit elderly care institutions…"}


@pytest.fixture
def store(tmp_path) -> FeedbackStore:
    s = FeedbackStore(tmp_path / "var" / "feedback.sqlite3", timeout=2.0)
    yield s
    s.close()


def test_rating_is_persisted_with_every_field(tmp_path):
    path = tmp_path / "var" / "feedback.sqlite3"
    first = FeedbackStore(path)
    row = first.add("down", "外资能办医院吗？", "**可以**，见[第18项]。", [CITATION],
                    reason="  missed task 18  ", conversation_id="conv-1")
    first.close()

    reopened = FeedbackStore(path)
    [record] = list(reopened.records())
    assert record.id == row
    assert record.rating == "down"
    assert record.reason == "missed task 18"  # stripped
    assert record.question == "外资能办医院吗？"
    assert record.answer == "**可以**，见[第18项]。"
    assert record.citations == [CITATION]
    assert record.conversation_id == "conv-1"
    assert record.created_at.endswith("+00:00")
    reopened.close()


def test_database_uses_wal_and_a_busy_timeout(store):
    store.add("up", "q", "a")
    conn = store._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2000


def test_citation_objects_and_empty_reason_are_stored_plainly(store):
    store.add("up", "q", "a", [Citation(task=17, section="s", text="t", text_en=None)], reason="   ")
    [record] = list(store.records())
    assert record.reason is None
    assert record.citations[0]["task"] == 17 and record.citations[0]["text_en"] is None


def test_bad_rating_and_format_are_refused(store):
    with pytest.raises(ValueError, match="rating must be 'up' or 'down'"):
        store.add("meh", "q", "a")
    with pytest.raises(ValueError, match="export format"):
        store.export("xlsx", io.StringIO())  # type: ignore[arg-type]


def test_csv_export_content_and_formula_neutralisation(store, tmp_path):
    store.add("up", "=HYPERLINK(\"http://evil\",\"x\")", "+SUM(1,2)", [CITATION], reason="@cmd", conversation_id="-1")
    store.add("down", "外资做VPN持股上限多少?", "外资股比不超过50%，见[第1项]。", [], reason=None, conversation_id=None)
    text = store.export_text("csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    evil, plain = rows
    assert evil["question"] == "'=HYPERLINK(\"http://evil\",\"x\")"
    assert evil["answer"] == "'+SUM(1,2)"
    assert evil["reason"] == "'@cmd"
    assert evil["conversation_id"] == "'-1"
    assert evil["rating"] == "up"
    assert json.loads(evil["citations"]) == [CITATION]
    assert plain["question"] == "外资做VPN持股上限多少?"  # ordinary text is untouched
    assert plain["answer"] == "外资股比不超过50%，见[第1项]。"
    assert plain["reason"] == "" and plain["conversation_id"] == ""
    assert json.loads(plain["citations"]) == []
    for row in rows:  # no cell may start a formula
        assert not any(value.startswith(("=", "+", "-", "@")) for value in row.values())

    out = tmp_path / "feedback.csv"
    assert store.export("csv", out) == 2
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM so spreadsheets read the Chinese text
    assert list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))[1]["question"] == "外资做VPN持股上限多少?"


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"), ("\t=1", "'\t=1"),
    ("a=1", "a=1"), ("", ""), (5, 5),
])
def test_neutralise_cell(value, expected):
    assert neutralise_cell(value) == expected


def test_jsonl_export_round_trips(store, tmp_path):
    store.add("up", "Can foreign companies run elderly care homes?", "Yes [Task 17].", [CITATION],
              conversation_id="c1")
    store.add("down", "=cmd", "no", [], reason="wrong")
    lines = store.export_text("jsonl").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["rating"] for r in records] == ["up", "down"]
    assert records[0]["citations"] == [CITATION]
    assert records[0]["conversation_id"] == "c1"
    assert records[1]["question"] == "=cmd"  # JSON is not a spreadsheet: kept verbatim
    assert records[1]["reason"] == "wrong"
    assert set(records[0]) == {"id", "created_at", "rating", "reason", "question", "answer", "citations",
                               "conversation_id"}
    out = tmp_path / "f.jsonl"
    assert store.export("jsonl", out) == 2
    assert out.read_text(encoding="utf-8").splitlines() == lines


def test_concurrent_writes_from_many_threads_lose_nothing(store):
    threads, per_thread = 16, 40
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def write(worker: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                store.add("up" if i % 2 else "down", f"q-{worker}-{i}", "a", [{"task": i}], conversation_id=str(worker))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    assert store.count() == threads * per_thread
    questions = {r.question for r in store.records()}
    assert questions == {f"q-{w}-{i}" for w in range(threads) for i in range(per_thread)}


def test_concurrent_writes_from_several_processes_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite3"
    FeedbackStore(path).count()  # create the schema first
    script = ("import sys; from assistant.feedback import FeedbackStore\n"
              "s = FeedbackStore(sys.argv[1], timeout=10)\n"
              "[s.add('up', f'{sys.argv[2]}-{i}', 'a') for i in range(50)]\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), f"p{n}"]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert FeedbackStore(path).count() == 200


def test_read_only_database_gives_a_clear_error(tmp_path):
    path = tmp_path / "feedback.sqlite3"
    writable = FeedbackStore(path)
    writable.add("up", "q", "a")
    writable.close()
    read_only = FeedbackStore(path, read_only=True)
    with pytest.raises(FeedbackUnavailable, match="read-only") as info:
        read_only.add("down", "q2", "a2")
    assert str(path) in str(info.value)
    assert read_only.count() == 1  # reading still works
    read_only.close()


def _make_read_only(paths: list[Path]) -> Callable[[], None]:
    """Make files unwritable even for root (``chattr +i``), else by mode; returns the undo."""
    if os.geteuid() != 0:
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        return lambda: [p.chmod(0o755) for p in paths]
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not supported here: cannot make a file read-only")
    return lambda: subprocess.run([chattr, "-i", *map(str, paths)], capture_output=True)


def test_read_only_file_gives_a_clear_error(tmp_path):
    """A database file nobody may write (immutable for root, mode 444 otherwise)."""
    folder = tmp_path / "ro"
    path = folder / "feedback.sqlite3"
    first = FeedbackStore(path)
    first.add("up", "q", "a")
    first.close()
    undo = _make_read_only([path, folder])
    try:
        store = FeedbackStore(path)
        with pytest.raises(FeedbackUnavailable, match="read-only") as info:
            store.add("down", "q", "a")
        assert str(path) in str(info.value)
        store.close()
    finally:
        undo()


def test_locked_database_gives_a_clear_error_and_recovers(tmp_path):
    path = tmp_path / "feedback.sqlite3"
    store = FeedbackStore(path, timeout=0.3)
    store.add("up", "q", "a")
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    with pytest.raises(FeedbackUnavailable, match="locked"):
        store.add("down", "q", "a")
    assert time.monotonic() - started < 5
    blocker.rollback()
    blocker.close()
    store.add("down", "q", "a")  # usable again once the lock is gone
    assert store.count() == 2


def test_unusable_path_gives_a_clear_error(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(FeedbackUnavailable, match="cannot store feedback"):
        FeedbackStore(not_a_folder / "feedback.sqlite3").add("up", "q", "a")


def test_cli_exports_csv_and_jsonl(tmp_path):
    path = tmp_path / "feedback.sqlite3"
    store = FeedbackStore(path)
    store.add("up", "=2+2", "answer", [CITATION], conversation_id="c9")
    store.close()
    env = dict(os.environ, ASSISTANT_FEEDBACK_DB=str(path))
    cli = [sys.executable, "-m", "assistant.cli", "feedback", "export"]

    jsonl = subprocess.run([*cli, "--format", "jsonl"], env=env, capture_output=True, text=True, timeout=120)
    assert jsonl.returncode == 0, jsonl.stderr
    assert json.loads(jsonl.stdout)["question"] == "=2+2"
    assert "exported 1 ratings" in jsonl.stderr

    out = tmp_path / "out.csv"
    done = subprocess.run([*cli, "--output", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [row] = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert row["question"] == "'=2+2" and row["conversation_id"] == "c9"

    bad = subprocess.run([*cli, "--format", "xml"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "use csv or jsonl" in bad.stderr
    missing = subprocess.run(cli, env=dict(env, ASSISTANT_FEEDBACK_DB=str(tmp_path / "none.sqlite3")),
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no feedback yet" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_default_path_is_settings_feedback_path(settings):
    assert FeedbackStore.from_settings(settings).path == settings.feedback_path
    assert Path(settings.feedback_path).name == "feedback.sqlite3"
