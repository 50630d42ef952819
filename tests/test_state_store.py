"""The conversation store, the same tests on SQLite and PostgreSQL, plus the PostgreSQL feedback store.

PostgreSQL comes from ``scripts/postgres.sh start`` (a private server on a loopback port, see
tests/pg_fixture.py); every test gets its own schema, so tests never see each other's rows.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from assistant.config import Settings
from assistant.state import (
    ConversationNotFound,
    ConversationStore,
    SqliteConversationStore,
    TurnRecord,
    open_conversation_store,
    open_feedback_store,
)

pytest_plugins = ["pg_fixture"]  # pg_dsn, pg_schema
BACKENDS = ["sqlite", "postgres"]


class FakeClock:
    """Time that moves only when told (TTL and LRU tests without sleeping)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StoreFactory = Callable[..., ConversationStore]


@pytest.fixture(params=BACKENDS)
def make_store(request, tmp_path) -> Iterator[StoreFactory]:
    """Opens stores of one backend, all on the same file / schema (so two of them act as two workers)."""
    opened: list[ConversationStore] = []
    if request.param == "postgres":
        from assistant.state.postgres import PostgresConversationStore

        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")

        def make(**kw) -> ConversationStore:
            store = PostgresConversationStore(dsn, schema=schema, **kw)
            opened.append(store)
            return store
    else:
        path = tmp_path / "var" / "conversations.sqlite3"

        def make(**kw) -> ConversationStore:
            store = SqliteConversationStore(path, **kw)
            opened.append(store)
            return store

    yield make
    for store in opened:
        store.close()


def turn(n: int, **kw) -> TurnRecord:
    fields = {"question": f"问题 {n}?", "resolved_query": f"resolved {n}", "cited_units": [f"task:{n}", "section:2.1"],
              "coverage": "full", "lang": "zh", "created_at": 1_700_000_000.0 + n}
    fields.update(kw)
    return TurnRecord(**fields)


def test_round_trip_keeps_turns_in_order_with_all_fields(make_store):
    store = make_store()
    conv = store.create()
    assert len(conv.id) == 32 and conv.turns == []
    turns = [turn(1, related_units=["task:9", "section:3.1"]), turn(2, coverage="partial", lang="en", cited_units=[]),
             turn(3, coverage="none")]
    for t in turns:
        store.append(conv.id, t)
    got = store.get(conv.id)
    assert got is not None
    assert got.id == conv.id
    assert got.turns == turns
    assert got.updated_at >= got.created_at
    assert store.count() == 1
    assert got.turns[0].shown_units == ["task:1", "section:2.1", "task:9", "section:3.1"]


def test_max_turns_trims_oldest(make_store):
    store = make_store(max_turns=3)
    conv = store.create()
    for n in range(1, 6):
        store.append(conv.id, turn(n))
    got = store.get(conv.id)
    assert got is not None
    assert [t.question for t in got.turns] == ["问题 3?", "问题 4?", "问题 5?"]


def test_ttl_expiry_returns_none_and_refuses_appends(make_store):
    clock = FakeClock()
    store = make_store(ttl_seconds=60, clock=clock)
    conv = store.create()
    clock.advance(50)
    store.append(conv.id, turn(1))  # an update restarts the TTL
    clock.advance(50)
    assert store.get(conv.id) is not None
    clock.advance(11)
    assert store.get(conv.id) is None
    assert store.count() == 0
    with pytest.raises(ConversationNotFound):
        store.append(conv.id, turn(2))


def test_ttl_with_real_time(make_store):
    store = make_store(ttl_seconds=0.2)
    conv = store.create()
    assert store.get(conv.id) is not None
    time.sleep(0.3)
    assert store.get(conv.id) is None


def test_max_conversations_evicts_least_recently_updated(make_store):
    clock = FakeClock()
    store = make_store(max_conversations=3, clock=clock)
    ids = []
    for _ in range(3):
        ids.append(store.create().id)
        clock.advance(1)
    store.append(ids[0], turn(1))  # the oldest becomes the most recently updated
    clock.advance(1)
    newest = store.create().id
    assert store.count() == 3
    assert store.get(ids[1]) is None  # least recently updated: evicted
    assert all(store.get(i) is not None for i in (ids[0], ids[2], newest))
    assert store.get(ids[0]).turns == [turn(1)]


def test_unknown_id(make_store):
    store = make_store()
    assert store.get("no-such-conversation") is None
    assert store.get(uuid.uuid4().hex) is None
    with pytest.raises(ConversationNotFound, match="unknown or expired"):
        store.append("no-such-conversation", turn(1))
    store.delete("no-such-conversation")  # no error


def test_delete(make_store):
    store = make_store()
    conv = store.create()
    store.append(conv.id, turn(1))
    store.delete(conv.id)
    assert store.get(conv.id) is None
    assert store.count() == 0


def test_two_stores_see_each_others_writes(make_store):
    worker_a, worker_b = make_store(), make_store()
    conv = worker_a.create()
    worker_b.append(conv.id, turn(1))
    worker_a.append(conv.id, turn(2))
    assert [t.question for t in worker_b.get(conv.id).turns] == ["问题 1?", "问题 2?"]
    assert worker_a.get(conv.id) == worker_b.get(conv.id)
    worker_b.delete(conv.id)
    assert worker_a.get(conv.id) is None


def test_survives_restart(make_store):
    store = make_store()
    conv = store.create()
    store.append(conv.id, turn(1))
    store.close()
    reopened = make_store()
    got = reopened.get(conv.id)
    assert got is not None and got.turns == [turn(1)]
    reopened.append(conv.id, turn(2))
    assert len(reopened.get(conv.id).turns) == 2


def test_concurrent_appends_lose_no_turn(make_store):
    """8 threads over two store objects (two workers, each with its own connections)."""
    workers = [make_store(max_turns=1000), make_store(max_turns=1000)]
    conv = workers[0].create()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(thread: int) -> None:
        try:
            start.wait()
            for i in range(10):
                workers[thread % 2].append(conv.id, turn(thread * 100 + i))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = workers[1].get(conv.id)
    assert got is not None and len(got.turns) == 80
    numbers = [t.created_at - 1_700_000_000.0 for t in got.turns]
    for thread in range(8):  # every turn is there, each thread's in its own order
        assert [n for n in numbers if thread * 100 <= n < thread * 100 + 100] == [thread * 100 + i for i in range(10)]


def test_bad_coverage_is_refused():
    with pytest.raises(ValueError, match="coverage"):
        turn(1, coverage="most")


# --- factories ------------------------------------------------------------------------------
def test_factory_picks_sqlite_by_default(tmp_path):
    settings = Settings(home=tmp_path, conversation_max=5, conversation_turns=2)
    assert settings.conversations_path == tmp_path / "var" / "conversations.sqlite3"
    store = open_conversation_store(settings)
    try:
        assert isinstance(store, SqliteConversationStore)
        assert (store.max_conversations, store.max_turns) == (5, 2)
        conv = store.create()
        assert settings.conversations_path.exists() and store.get(conv.id) is not None
    finally:
        store.close()
    feedback = open_feedback_store(settings)
    try:
        assert type(feedback).__name__ == "FeedbackStore"
    finally:
        feedback.close()


def test_factory_picks_postgres_with_a_dsn(pg_dsn, tmp_path):
    from assistant.state.feedback_pg import PostgresFeedbackStore
    from assistant.state.postgres import PostgresConversationStore

    settings = Settings(home=tmp_path, state_dsn=pg_dsn)
    store = open_conversation_store(settings)
    feedback = open_feedback_store(settings)
    try:
        assert isinstance(store, PostgresConversationStore)
        assert isinstance(feedback, PostgresFeedbackStore)
        conv = store.create()
        assert store.get(conv.id) is not None
        store.delete(conv.id)
    finally:
        store.close()
        feedback.close()
    assert not settings.conversations_path.exists()


# --- PostgreSQL feedback --------------------------------------------------------------------
@pytest.fixture
def pg_feedback(pg_dsn, pg_schema):
    from assistant.state.feedback_pg import PostgresFeedbackStore

    store = PostgresFeedbackStore(pg_dsn, schema=pg_schema, timeout=5.0)
    yield store
    store.close()


def test_pg_feedback_add_and_records(pg_feedback):
    citation = {"task": 17, "section": "医疗康养", "text": "允许外商捐资举办非营利性养老机构……"}
    first = pg_feedback.add("up", "外资养老机构?", "可以。", [citation], reason="  ", conversation_id="abc")
    second = pg_feedback.add("down", "Q2", "A2", reason=" wrong task ")
    assert second > first
    assert pg_feedback.count() == 2
    records = list(pg_feedback.records())
    assert [r.rating for r in records] == ["up", "down"]
    assert records[0].citations == [citation]
    assert records[0].reason is None and records[0].conversation_id == "abc"
    assert records[1].reason == "wrong task" and records[1].citations == []
    with pytest.raises(ValueError, match="rating"):
        pg_feedback.add("meh", "q", "a")


def test_pg_feedback_exports_match_the_sqlite_store(pg_feedback, tmp_path):
    import json

    from assistant.feedback import FeedbackStore

    sqlite_store = FeedbackStore(tmp_path / "feedback.sqlite3")
    try:
        for store in (pg_feedback, sqlite_store):
            store.add("up", "=HYPERLINK(evil)", "答案", [{"task": 3}], conversation_id="c1")
            store.add("down", "q", "a")
        rows = [json.loads(line) for line in pg_feedback.export_text("jsonl").splitlines()]
        assert [r["question"] for r in rows] == ["=HYPERLINK(evil)", "q"]

        def strip_times(text: str) -> list[list[str]]:
            return [line.split(",")[2:] for line in text.splitlines()]

        assert strip_times(pg_feedback.export_text("csv")) == strip_times(sqlite_store.export_text("csv"))
        assert "'=HYPERLINK(evil)" in pg_feedback.export_text("csv")
        out = tmp_path / "export.jsonl"
        assert pg_feedback.export("jsonl", out) == 2
        assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    finally:
        sqlite_store.close()


def test_pg_unreachable_is_a_clear_error():
    from assistant.feedback import FeedbackUnavailable
    from assistant.state import ConversationUnavailable
    from assistant.state.feedback_pg import PostgresFeedbackStore
    from assistant.state.postgres import PostgresConversationStore

    dsn = "postgresql://nobody:secret@127.0.0.1:1/none"
    with pytest.raises(ConversationUnavailable, match="unavailable: cannot connect") as info:
        PostgresConversationStore(dsn, busy_timeout=1.0)
    assert "secret" not in str(info.value)
    with pytest.raises(FeedbackUnavailable, match="unavailable"):
        PostgresFeedbackStore(dsn, timeout=1.0)


def test_a_sqlite_file_of_the_older_schema_gains_the_related_units_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # the schema before related units were stored
        conn.executescript("""
            CREATE TABLE conversations (id TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL);
            CREATE TABLE conversation_turns (conversation_id TEXT NOT NULL, seq INTEGER NOT NULL,
                question TEXT NOT NULL, resolved_query TEXT NOT NULL, cited_units TEXT NOT NULL DEFAULT '[]',
                coverage TEXT NOT NULL, lang TEXT NOT NULL, created_at REAL NOT NULL,
                PRIMARY KEY (conversation_id, seq));""")
        now = time.time()
        conn.execute("INSERT INTO conversations VALUES ('old', ?, ?)", (now, now))
        conn.execute("INSERT INTO conversation_turns VALUES ('old', 1, 'q', 'q', '[\"task:1\"]', 'full', 'zh', ?)",
                     (now,))
    store = SqliteConversationStore(path)
    try:
        old = store.get("old")
        assert old is not None and old.turns[0].cited_units == ["task:1"] and old.turns[0].related_units == []
        store.append("old", turn(2, related_units=["task:3"]))
        assert store.get("old").turns[-1].related_units == ["task:3"]
    finally:
        store.close()
