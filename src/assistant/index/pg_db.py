"""The PostgreSQL side of the search backend: one connection pool per database and schema.

Every reader and the publisher come through :class:`IndexDatabase`, so one place turns "cannot
connect", "no pgvector" or "bad schema name" into an :class:`IndexUnavailable` with the DSN's
password left out (the CLI prints it as one line; the API keeps its old index). Connections carry
``search_path = <schema>, <pgvector's schema>`` and the pgvector adapters (numpy arrays travel as
binary ``vector``s), and each has the iterative HNSW scan switched on (a startup option, so
llama-index's connections have it too), so a ``LIMIT k`` larger than ``hnsw.ef_search`` still
returns k rows.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from assistant.index.manifest import IndexUnavailable
from assistant.state.postgres import redact

log = logging.getLogger(__name__)

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed)

# Versions and the one row that says which of them readers use (see pg_store for the protocol).
CONTROL_TABLES = """
CREATE TABLE IF NOT EXISTS versions (
    version BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    build TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('writing', 'ready')),
    manifest JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS published (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version BIGINT NOT NULL REFERENCES versions (version),
    previous BIGINT REFERENCES versions (version) ON DELETE SET NULL,
    published_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""


class IndexDatabase:
    """A small pool of connections to ``schema`` of the database at ``dsn``.

    Opening checks the server at once (one probe connection) so a wrong DSN fails at start-up with
    a clear message instead of on the first search.
    """

    def __init__(self, dsn: str, schema: str = "assistant_index", *, pool_size: int = 8,
                 timeout: float = 5.0) -> None:
        if not SCHEMA_NAME.match(schema):
            raise IndexUnavailable(f"index schema must be a lower-case SQL identifier, not {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self.where = f"index database {redact(dsn)} (schema {schema})"
        self.timeout = float(timeout)
        self._sqlalchemy: tuple[Any, Any] | None = None
        self._lock = threading.Lock()
        self.vector_schema = self._probe()
        # relaxed_order: an HNSW scan goes on until LIMIT rows are found, not just ef_search of them; the
        # pipeline re-scores its candidates exactly, so their order within the scan does not matter.
        self._options = (f"-c search_path={schema},{self.vector_schema} -c hnsw.iterative_scan=relaxed_order"
                         " -c hnsw.ef_search=100")
        self._pool = ConnectionPool(
            dsn, kwargs={"options": self._options, "connect_timeout": max(1, round(self.timeout))},
            min_size=1, max_size=max(1, pool_size), timeout=max(self.timeout, 30.0), open=False,
            configure=self._configure, check=ConnectionPool.check_connection, name=f"assistant-index-{schema}")
        try:
            self._pool.open(wait=True, timeout=self.timeout)
        except TRANSIENT as exc:
            self._pool.close()
            raise IndexUnavailable(f"{self.where} unavailable: cannot connect ({exc})") from exc

    def _probe(self) -> str:
        """Reach the server, make sure pgvector is installed, return the schema its types live in."""
        try:
            with psycopg.connect(self.dsn, connect_timeout=max(1, round(self.timeout)), autocommit=True) as conn:
                row = conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension"
                                   " WHERE extname = 'vector'").fetchone()
                if row is None:
                    try:
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    except psycopg.Error as exc:
                        raise IndexUnavailable(
                            f"{self.where}: the pgvector extension is not installed and cannot be created here "
                            f"({exc.diag.message_primary or exc}); an administrator can run "
                            "`CREATE EXTENSION vector` in this database") from exc
                    row = conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension"
                                       " WHERE extname = 'vector'").fetchone()
        except psycopg.ProgrammingError as exc:  # an unparsable DSN
            raise IndexUnavailable(f"index database DSN is invalid: {exc}") from exc
        except TRANSIENT as exc:
            raise IndexUnavailable(f"{self.where} unavailable: cannot connect ({str(exc).strip()})") from exc
        return str(row[0]) if row else "public"

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        register_vector(conn)
        if not conn.autocommit:
            conn.commit()  # register_vector's type lookup opened a transaction

    @contextmanager
    def connection(self, action: str) -> Iterator[psycopg.Connection]:
        """A pooled connection in one transaction (committed on success), server trouble as IndexUnavailable."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except TRANSIENT as exc:
            log.warning("%s: %s", self.where, exc)
            raise IndexUnavailable(f"{self.where} unavailable: cannot {action}, {exc}") from exc

    def connect(self) -> psycopg.Connection:
        """An autocommit connection of its own (the publisher holds a session lock on it for minutes and
        opens its transactions explicitly)."""
        try:
            conn = psycopg.connect(self.dsn, options=self._options, connect_timeout=max(1, round(self.timeout)),
                                   autocommit=True)
        except TRANSIENT as exc:
            raise IndexUnavailable(f"{self.where} unavailable: cannot connect ({exc})") from exc
        self._configure(conn)
        return conn

    def sqlalchemy_engines(self) -> tuple[Any, Any]:
        """A SQLAlchemy engine pair (sync, async) for llama-index's ``PGVectorStore``, made on first use.

        Both open psycopg 3 connections with this database's options, whatever form the DSN has.
        """
        with self._lock:
            if self._sqlalchemy is None:
                from sqlalchemy import create_engine
                from sqlalchemy.ext.asyncio import create_async_engine

                def sync() -> psycopg.Connection:
                    return psycopg.connect(self.dsn, options=self._options)

                async def async_() -> psycopg.AsyncConnection:
                    return await psycopg.AsyncConnection.connect(self.dsn, options=self._options)

                self._sqlalchemy = (create_engine("postgresql+psycopg://", creator=sync, pool_size=2),
                                    create_async_engine("postgresql+psycopg://", async_creator=async_, pool_size=2))
            return self._sqlalchemy

    def ensure_control_tables(self, conn: psycopg.Connection) -> None:
        """The schema and its two control tables (under an advisory lock: concurrent creates collide)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"assistant-index-schema-{self.schema}",))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        conn.execute(f"SET LOCAL search_path TO {self.schema}, {self.vector_schema}")  # it may be new
        conn.execute(CONTROL_TABLES)

    def close(self) -> None:
        self._pool.close()
        if self._sqlalchemy is not None:
            self._sqlalchemy[0].dispose()
            self._sqlalchemy = None
