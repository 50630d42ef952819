"""Per-thread SQLite connections to one WAL database: what the feedback and conversation stores share.

sqlite3 connections must not cross threads, so every thread gets its own; the file runs in WAL mode
(readers never block the writer, set once with the schema) with a busy timeout so writers from other
threads and processes queue instead of failing. Stdlib only, no web imports.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path


class ThreadConnections:
    """One connection per thread to ``path``; the schema is applied by the first writable one."""

    def __init__(self, path: Path, schema: str, timeout: float, *, read_only: bool = False,
                 isolation_level: str | None = "",
                 migrate: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.path = path
        self.migrate = migrate  # brings a file of an older schema up to date, after the schema
        self.schema = schema
        self.timeout = timeout
        self.read_only = read_only
        self.isolation_level = isolation_level
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._ready = False

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            target, uri = f"{self.path.resolve().as_uri()}?mode=ro", True
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target, uri = str(self.path), False
        conn = sqlite3.connect(target, uri=uri, timeout=self.timeout, check_same_thread=False,
                               isolation_level=self.isolation_level)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if not self.read_only:
                conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def get(self) -> sqlite3.Connection:
        """This thread's connection (opened, and the schema applied, on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        if not self._ready and not self.read_only:
            with self._lock:
                if not self._ready:  # WAL is a property of the file: set once, with the schema
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(self.schema)
                    if self.migrate is not None:
                        self.migrate(conn)
                    self._ready = True
        return conn

    def close(self) -> None:
        """Close every thread's connection (at shutdown)."""
        with self._lock:
            for conn in self._connections:
                with suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()
