"""Conversation memory behind one interface, with a SQLite implementation (stdlib only, no web imports).

Follow-up questions ("and for Hong Kong?") need the earlier turns, and with several API workers the
turns must live outside any one process: a worker that did not see turn 1 may answer turn 2, and a
restart must not forget a conversation. So the store, not its callers, enforces the bounds (at most
``max_conversations``, each kept ``ttl_seconds`` after its last update and holding its last
``max_turns`` turns), and every backend keeps turns as plain rows (JSON for the cited unit ids), never
pickles. The SQLite store follows ``assistant.feedback``: one connection per thread, WAL so readers
never block the writer, a busy timeout so writers from other processes queue instead of failing, and
``ConversationUnavailable`` with a plain message when the database cannot be used.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.sqlite_connections import ThreadConnections

log = logging.getLogger(__name__)

Coverage = Literal["full", "partial", "none"]
COVERAGES: tuple[str, ...] = ("full", "partial", "none")
Clock = Callable[[], float]


class ConversationUnavailable(RuntimeError):
    """The conversation database cannot be used right now; the message says why and where."""


class ConversationNotFound(LookupError):
    """The conversation id is unknown or its conversation expired (callers start a new one)."""


@dataclass(frozen=True)
class TurnRecord:
    """One question and what answered it: enough to resolve a follow-up, no answer text."""

    question: str
    resolved_query: str
    cited_units: list[str]
    coverage: Coverage
    lang: str
    created_at: float = field(default_factory=time.time)
    related_units: list[str] = field(default_factory=list)  # shown after the citations as related, in order

    def __post_init__(self) -> None:
        if self.coverage not in COVERAGES:
            raise ValueError(f"coverage must be one of {COVERAGES}, not {self.coverage!r}")

    @property
    def shown_units(self) -> list[str]:
        """Every unit the answer listed, in order: what "the third one" counts through."""
        return [*self.cited_units, *(u for u in self.related_units if u not in self.cited_units)]

    def units_json(self) -> str:
        return json.dumps(list(self.cited_units), ensure_ascii=False)

    def related_json(self) -> str:
        return json.dumps(list(self.related_units), ensure_ascii=False)

    @classmethod
    def from_row(cls, question: str, resolved_query: str, cited_units: Any, coverage: str, lang: str,
                 created_at: float, related_units: Any = None) -> TurnRecord:
        """A turn read back from a row (unit lists as JSON text or already decoded lists)."""
        return cls(question, resolved_query, _units(cited_units), coverage, lang,  # type: ignore[arg-type]
                   float(created_at), _units(related_units))


def _units(value: Any) -> list[str]:
    units = json.loads(value or "[]") if isinstance(value, str | bytes) else value
    return [str(u) for u in units or []]


@dataclass
class Conversation:
    """A conversation and its kept turns, oldest first."""

    id: str
    turns: list[TurnRecord]
    created_at: float
    updated_at: float


class ConversationStore(ABC):
    """Bounded, shared conversation memory; every method is thread-safe."""

    def __init__(self, max_conversations: int = 1000, ttl_seconds: float = 3600, max_turns: int = 10,
                 *, clock: Clock = time.time) -> None:
        if max_conversations < 1 or max_turns < 1 or ttl_seconds <= 0:
            raise ValueError("max_conversations and max_turns must be >= 1 and ttl_seconds > 0")
        self.max_conversations = int(max_conversations)
        self.ttl_seconds = float(ttl_seconds)
        self.max_turns = int(max_turns)
        self.clock = clock

    def _cutoff(self, now: float) -> float:
        """Conversations last updated before this moment have expired."""
        return now - self.ttl_seconds

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    @abstractmethod
    def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None when the id is unknown or it expired."""

    @abstractmethod
    def create(self) -> Conversation:
        """A new empty conversation; evicts the least recently updated beyond ``max_conversations``."""

    @abstractmethod
    def append(self, conversation_id: str, turn: TurnRecord) -> None:
        """Add a turn, keeping the last ``max_turns``; ``ConversationNotFound`` if unknown or expired."""

    @abstractmethod
    def delete(self, conversation_id: str) -> None:
        """Forget a conversation (no error when it does not exist)."""

    @abstractmethod
    def count(self) -> int:
        """How many conversations are alive (not expired)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (at shutdown)."""

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_at);
CREATE TABLE IF NOT EXISTS conversation_turns (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    question TEXT NOT NULL,
    resolved_query TEXT NOT NULL,
    cited_units TEXT NOT NULL DEFAULT '[]',
    coverage TEXT NOT NULL CHECK (coverage IN ('full', 'partial', 'none')),
    lang TEXT NOT NULL,
    created_at REAL NOT NULL,
    related_units TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (conversation_id, seq)
);
"""
_TURN_COLUMNS = "question, resolved_query, cited_units, coverage, lang, created_at, related_units"


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """A file written before ``related_units`` existed gets the column (its turns: none shown)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(conversation_turns)")}
    if "related_units" not in columns:
        conn.execute("ALTER TABLE conversation_turns ADD COLUMN related_units TEXT NOT NULL DEFAULT '[]'")
# Least recently updated beyond the bound (created_at breaks ties: the newer one stays).
_BEYOND_BOUND = "SELECT id FROM conversations ORDER BY updated_at DESC, created_at DESC LIMIT -1 OFFSET ?"


class SqliteConversationStore(ConversationStore):
    """Conversations in a SQLite file at ``path``, shared by the processes of one machine."""

    def __init__(self, path: Path | str, max_conversations: int = 1000, ttl_seconds: float = 3600,
                 max_turns: int = 10, busy_timeout: float = 5.0, *, clock: Clock = time.time) -> None:
        super().__init__(max_conversations, ttl_seconds, max_turns, clock=clock)
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        self._connections = ThreadConnections(self.path, _SCHEMA, self.busy_timeout, isolation_level=None,
                                               migrate=_add_missing_columns)
        # One writer per process at a time (sqlite's busy handler is not fair between threads).
        self._write_lock = threading.Lock()

    # --- connections -----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    def _problem(self, exc: BaseException, action: str) -> ConversationUnavailable:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            why = f"it is locked by another process (waited {self.busy_timeout:g} s)"
        elif "readonly" in text or "read-only" in text:
            why = "it is read-only (the file or its folder cannot be written)"
        elif "unable to open" in text or isinstance(exc, OSError):
            why = "the file cannot be opened or created"
        else:
            why = str(exc)
        return ConversationUnavailable(f"conversation database {self.path} unavailable: cannot {action}, {why}")

    @contextmanager
    def _transaction(self, action: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction (IMMEDIATE for writes, so the write lock is taken before any read)."""
        with self._write_lock if write else nullcontext():  # WAL readers need no lock
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
                log.warning("conversation store %s: %s", self.path, exc)
                raise self._problem(exc, action) from exc

    def close(self) -> None:
        self._connections.close()

    # --- the interface -----------------------------------------------------------------------
    def get(self, conversation_id: str) -> Conversation | None:
        cutoff = self._cutoff(self.clock())
        with self._transaction("read a conversation", write=False) as conn:
            row = conn.execute("SELECT created_at, updated_at FROM conversations WHERE id = ? AND updated_at >= ?",
                               (conversation_id, cutoff)).fetchone()
            if row is None:
                return None
            turns = conn.execute(f"SELECT {_TURN_COLUMNS} FROM conversation_turns WHERE conversation_id = ?"
                                 " ORDER BY seq", (conversation_id,)).fetchall()
        return Conversation(conversation_id, [TurnRecord.from_row(*t) for t in turns], float(row[0]), float(row[1]))

    def create(self) -> Conversation:
        now = self.clock()
        conversation = Conversation(self.new_id(), [], now, now)
        with self._transaction("create a conversation", write=True) as conn:
            stale = "SELECT id FROM conversations WHERE updated_at < ?"
            conn.execute(f"DELETE FROM conversation_turns WHERE conversation_id IN ({stale})", (self._cutoff(now),))
            conn.execute("DELETE FROM conversations WHERE updated_at < ?", (self._cutoff(now),))
            conn.execute("INSERT INTO conversations (id, created_at, updated_at) VALUES (?, ?, ?)",
                         (conversation.id, now, now))
            conn.execute(f"DELETE FROM conversation_turns WHERE conversation_id IN ({_BEYOND_BOUND})",
                         (self.max_conversations,))
            evicted = conn.execute(f"DELETE FROM conversations WHERE id IN ({_BEYOND_BOUND})",
                                   (self.max_conversations,)).rowcount
        if evicted:
            log.info("conversation store %s: evicted %d least recently used", self.path, evicted)
        return conversation

    def append(self, conversation_id: str, turn: TurnRecord) -> None:
        now = self.clock()
        with self._transaction("store a turn", write=True) as conn:
            row = conn.execute("SELECT updated_at FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None or row[0] < self._cutoff(now):
                raise ConversationNotFound(f"conversation {conversation_id!r} is unknown or expired")
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM conversation_turns WHERE conversation_id = ?",
                               (conversation_id,)).fetchone()[0]
            conn.execute(f"INSERT INTO conversation_turns (conversation_id, seq, {_TURN_COLUMNS})"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (conversation_id, seq, turn.question, turn.resolved_query, turn.units_json(),
                          turn.coverage, turn.lang, turn.created_at, turn.related_json()))
            conn.execute("DELETE FROM conversation_turns WHERE conversation_id = ? AND seq <= ?",
                         (conversation_id, seq - self.max_turns))
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (max(now, row[0]), conversation_id))

    def delete(self, conversation_id: str) -> None:
        with self._transaction("delete a conversation", write=True) as conn:
            conn.execute("DELETE FROM conversation_turns WHERE conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def count(self) -> int:
        cutoff = self._cutoff(self.clock())
        with self._transaction("count conversations", write=False) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM conversations WHERE updated_at >= ?",
                                    (cutoff,)).fetchone()[0])

