"""PostgreSQL backing for shared state (psycopg 3 with a connection pool), for more than one machine.

SQLite serves the workers of one machine; once workers run on several hosts they need a server.
Every store here takes a DSN and a schema: tables are created in that schema if missing (under an
advisory lock, since concurrent ``CREATE ... IF NOT EXISTS`` can still collide), connections come
from a small pool instead of one per thread (a 40-thread API worker would otherwise hold 40
server connections), and any failure to reach or lock the database surfaces as the caller's
``…Unavailable`` error with the DSN's password left out.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from assistant.state.conversations import (
    Clock,
    Conversation,
    ConversationNotFound,
    ConversationStore,
    ConversationUnavailable,
    TurnRecord,
)

log = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Reaching, locking or talking to the server went wrong (not a bug in our SQL).
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed)


def redact(dsn: str) -> str:
    """``user@host:port/db`` of a DSN, without its password, for messages and logs."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    return f"{parts.get('user', '')}@{parts.get('host', '')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PgPool:
    """A pool of connections whose ``search_path`` is one schema, created with its tables on open."""

    def __init__(self, dsn: str, *, schema: str, setup: str, timeout: float, max_size: int,
                 error: Callable[[str], Exception], what: str) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, not {schema!r}")
        self.where = f"{what} {redact(dsn)} (schema {schema})"
        self.timeout = float(timeout)
        self._error = error
        options = f"-c search_path={schema} -c lock_timeout={int(self.timeout * 1000)}"
        self._pool = ConnectionPool(
            dsn, kwargs={"options": options, "connect_timeout": max(1, round(self.timeout))},
            min_size=1, max_size=max(1, max_size), timeout=self.timeout, open=False,
            check=ConnectionPool.check_connection, name=f"assistant-{schema}")
        try:
            self._pool.open(wait=True, timeout=self.timeout)
        except TRANSIENT as exc:
            self._pool.close()
            raise error(f"{self.where} unavailable: cannot connect ({exc})") from exc
        with self.transaction("create tables") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"assistant-schema-{schema}",))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(f"SET LOCAL search_path TO {schema}")
            conn.execute(setup)

    @contextmanager
    def transaction(self, action: str) -> Iterator[psycopg.Connection]:
        """A connection in one transaction (committed on success), server trouble as ``error``."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except TRANSIENT as exc:
            log.warning("%s: %s", self.where, exc)
            raise self._error(f"{self.where} unavailable: cannot {action}, {exc}") from exc

    def close(self) -> None:
        self._pool.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_at);
CREATE TABLE IF NOT EXISTS conversation_turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    question TEXT NOT NULL,
    resolved_query TEXT NOT NULL,
    cited_units JSONB NOT NULL DEFAULT '[]',
    coverage TEXT NOT NULL CHECK (coverage IN ('full', 'partial', 'none')),
    lang TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
ALTER TABLE conversation_turns ADD COLUMN IF NOT EXISTS related_units JSONB NOT NULL DEFAULT '[]';
"""
_TURN_COLUMNS = "question, resolved_query, cited_units, coverage, lang, created_at, related_units"


class PostgresConversationStore(ConversationStore):
    """Conversations in PostgreSQL, shared by every worker that has the DSN."""

    def __init__(self, dsn: str, max_conversations: int = 1000, ttl_seconds: float = 3600, max_turns: int = 10,
                 busy_timeout: float = 5.0, *, schema: str = "public", pool_size: int = 8,
                 clock: Clock = time.time) -> None:
        super().__init__(max_conversations, ttl_seconds, max_turns, clock=clock)
        self.busy_timeout = float(busy_timeout)
        self._db = PgPool(dsn, schema=schema, setup=_SCHEMA, timeout=busy_timeout, max_size=pool_size,
                          error=ConversationUnavailable, what="conversation database")

    def close(self) -> None:
        self._db.close()

    def get(self, conversation_id: str) -> Conversation | None:
        cutoff = self._cutoff(self.clock())
        with self._db.transaction("read a conversation") as conn:
            row = conn.execute("SELECT created_at, updated_at FROM conversations WHERE id = %s AND updated_at >= %s",
                               (conversation_id, cutoff)).fetchone()
            if row is None:
                return None
            turns = conn.execute(f"SELECT {_TURN_COLUMNS} FROM conversation_turns WHERE conversation_id = %s"
                                 " ORDER BY seq", (conversation_id,)).fetchall()
        return Conversation(conversation_id, [TurnRecord.from_row(*t) for t in turns], float(row[0]), float(row[1]))

    def create(self) -> Conversation:
        now = self.clock()
        conversation = Conversation(self.new_id(), [], now, now)
        with self._db.transaction("create a conversation") as conn:
            # Creates queue here, so two workers cannot both see room for one more.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('assistant-conversations-create'))")
            conn.execute("DELETE FROM conversations WHERE updated_at < %s", (self._cutoff(now),))
            conn.execute("INSERT INTO conversations (id, created_at, updated_at) VALUES (%s, %s, %s)",
                         (conversation.id, now, now))
            evicted = conn.execute(
                "DELETE FROM conversations WHERE id IN (SELECT id FROM conversations"
                " ORDER BY updated_at DESC, created_at DESC OFFSET %s)", (self.max_conversations,)).rowcount
        if evicted:
            log.info("%s: evicted %d least recently used", self._db.where, evicted)
        return conversation

    def append(self, conversation_id: str, turn: TurnRecord) -> None:
        now = self.clock()
        with self._db.transaction("store a turn") as conn:
            # The row lock serialises appends to one conversation, so seq numbers never collide.
            row = conn.execute("SELECT updated_at FROM conversations WHERE id = %s FOR UPDATE",
                               (conversation_id,)).fetchone()
            if row is None or row[0] < self._cutoff(now):
                raise ConversationNotFound(f"conversation {conversation_id!r} is unknown or expired")
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM conversation_turns WHERE conversation_id = %s",
                               (conversation_id,)).fetchone()[0]  # type: ignore[index]
            conn.execute(f"INSERT INTO conversation_turns (conversation_id, seq, {_TURN_COLUMNS})"
                         " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (conversation_id, seq, turn.question, turn.resolved_query, Jsonb(list(turn.cited_units)),
                          turn.coverage, turn.lang, turn.created_at, Jsonb(list(turn.related_units))))
            conn.execute("DELETE FROM conversation_turns WHERE conversation_id = %s AND seq <= %s",
                         (conversation_id, seq - self.max_turns))
            conn.execute("UPDATE conversations SET updated_at = %s WHERE id = %s",
                         (max(now, row[0]), conversation_id))

    def delete(self, conversation_id: str) -> None:
        with self._db.transaction("delete a conversation") as conn:
            conn.execute("DELETE FROM conversations WHERE id = %s", (conversation_id,))

    def count(self) -> int:
        cutoff = self._cutoff(self.clock())
        with self._db.transaction("count conversations") as conn:
            row = conn.execute("SELECT COUNT(*) FROM conversations WHERE updated_at >= %s", (cutoff,)).fetchone()
        return int(row[0]) if row else 0
