"""👍/👎 feedback on answers, kept in a small SQLite file (stdlib only, no web imports).

The store is shared by the API and the UI, which call it from many threads: every thread
gets its own connection (sqlite3 connections must not be shared across threads), the
database runs in WAL mode so readers never block the writer, and a busy timeout lets
concurrent writers queue instead of failing. Anything that makes the database unusable
(locked past the timeout, read-only, unreachable path) surfaces as ``FeedbackUnavailable``
with a plain message, so a broken feedback file never takes down search or answers.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from assistant.sqlite_connections import ThreadConnections

log = logging.getLogger(__name__)

Rating = Literal["up", "down"]
ExportFormat = Literal["csv", "jsonl"]
RATINGS: tuple[str, ...] = ("up", "down")
COLUMNS: tuple[str, ...] = ("id", "created_at", "rating", "reason", "question", "answer", "citations",
                            "conversation_id")
# Cells a spreadsheet would evaluate as a formula (OWASP "CSV injection"); tab and CR too.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    reason TEXT,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    citations TEXT NOT NULL DEFAULT '[]',
    conversation_id TEXT
);
CREATE INDEX IF NOT EXISTS feedback_created ON feedback (created_at);
"""


class FeedbackUnavailable(RuntimeError):
    """The feedback database cannot be used right now; the message says why and where."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One stored rating."""

    id: int
    created_at: str
    rating: str
    reason: str | None
    question: str
    answer: str
    citations: list[Any]
    conversation_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "rating": self.rating, "reason": self.reason,
                "question": self.question, "answer": self.answer, "citations": self.citations,
                "conversation_id": self.conversation_id}


def neutralise_cell(value: Any) -> Any:
    """Prefix text a spreadsheet would run as a formula with ``'`` (numbers are left alone)."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _citation_json(citation: Any) -> Any:
    """Citations arrive as ``Citation`` objects (UI) or plain dicts (API); store plain JSON."""
    to_json = getattr(citation, "to_json", None)
    return to_json() if callable(to_json) else citation


def feedback_values(rating: str, reason: str | None, citations: Iterable[Any]) -> tuple[str, str | None, str]:
    """A rating checked and made storable (timestamp, trimmed reason, citations as JSON), for every store."""
    if rating not in RATINGS:
        raise ValueError(f"rating must be 'up' or 'down', not {rating!r}")
    reason = (reason.strip() or None) if reason else None
    payload = json.dumps([_citation_json(c) for c in citations], ensure_ascii=False, default=str)
    return datetime.now(UTC).isoformat(timespec="milliseconds"), reason, payload


class FeedbackStore:
    """Thread-safe SQLite store of answer ratings at ``path`` (created on first use)."""

    def __init__(self, path: Path | str, *, timeout: float = 5.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.read_only = read_only
        self._connections = ThreadConnections(self.path, _SCHEMA, timeout, read_only=read_only)
        self._write_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> FeedbackStore:
        """The store at ``settings.feedback_path`` (``ASSISTANT_FEEDBACK_DB``)."""
        return cls(settings.feedback_path, timeout=getattr(settings, "feedback_busy_timeout", 5.0))

    # --- connections -----------------------------------------------------------------------
    def _problem(self, exc: BaseException, action: str) -> FeedbackUnavailable:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            why = f"it is locked by another process (waited {self.timeout:g} s)"
        elif "readonly" in text or "read-only" in text or "read only" in text or self._unwritable():
            why = "it is read-only (the file or its folder cannot be written)"
        elif "unable to open" in text or isinstance(exc, OSError):
            why = "the file cannot be opened or created"
        else:
            why = str(exc)
        return FeedbackUnavailable(f"feedback database {self.path} unavailable: cannot {action}, {why}")

    def _unwritable(self) -> bool:
        """The file or its folder exists but may not be written (sqlite then only says "unable to open")."""
        return any(p.exists() and not os.access(p, os.W_OK) for p in (self.path, self.path.parent))

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    @contextmanager
    def _guard(self, action: str) -> Iterator[sqlite3.Connection]:
        """Run a database step, turning sqlite and file errors into ``FeedbackUnavailable``."""
        try:
            yield self._connection()
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            log.warning("feedback store %s: %s", self.path, exc)
            raise self._problem(exc, action) from exc

    def close(self) -> None:
        """Close every thread's connection (at shutdown)."""
        self._connections.close()

    # --- writing -----------------------------------------------------------------------------
    def add(self, rating: str, question: str, answer: str, citations: Iterable[Any] = (),
            reason: str | None = None, conversation_id: str | None = None) -> int:
        """Store one rating and return its row id."""
        created, reason, payload = feedback_values(rating, reason, citations)
        # One writer per process at a time: sqlite's busy handler polls with back-off and is not
        # fair, so many threads racing for the lock could starve one past the timeout.
        with self._write_lock, self._guard("store feedback") as conn, conn:
            cursor = conn.execute(
                "INSERT INTO feedback (created_at, rating, reason, question, answer, citations, conversation_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (created, rating, reason, question, answer, payload, conversation_id),
            )
            row_id = int(cursor.lastrowid or 0)
        log.info("feedback %s stored (#%d, conversation %s)", rating, row_id, conversation_id or "-")
        return row_id

    # --- reading -----------------------------------------------------------------------------
    def count(self) -> int:
        with self._guard("read feedback") as conn:
            try:
                return int(conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # a read-only store over a fresh file
                    return 0
                raise

    def records(self) -> Iterator[FeedbackRecord]:
        """All ratings, oldest first."""
        with self._guard("read feedback") as conn:
            try:
                rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY id").fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return
                raise
        for row in rows:
            data = dict(zip(COLUMNS, row, strict=True))
            try:
                data["citations"] = json.loads(data["citations"] or "[]")
            except json.JSONDecodeError:
                data["citations"] = []
            yield FeedbackRecord(**data)

    def export(self, fmt: ExportFormat, out: IO[str] | Path | str) -> int:
        """Write every rating as CSV (formula-safe) or JSON Lines; returns the number of rows.

        ``out`` is a text stream or a file path (written as UTF-8; CSV with a BOM so that
        spreadsheet programs read the Chinese text correctly).
        """
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"export format must be 'csv' or 'jsonl', not {fmt!r}")
        records = list(self.records())
        if isinstance(out, str | Path):
            encoding = "utf-8-sig" if fmt == "csv" else "utf-8"
            with Path(out).open("w", encoding=encoding, newline="") as handle:
                return self._write(fmt, records, handle)
        return self._write(fmt, records, out)

    @staticmethod
    def _write(fmt: ExportFormat, records: list[FeedbackRecord], handle: IO[str]) -> int:
        if fmt == "jsonl":
            for record in records:
                handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            return len(records)
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for record in records:
            row: Mapping[str, Any] = record.to_json()
            cells = [json.dumps(row[c], ensure_ascii=False) if c == "citations" else row[c] for c in COLUMNS]
            writer.writerow([neutralise_cell("" if cell is None else cell) for cell in cells])
        return len(records)

    def export_text(self, fmt: ExportFormat) -> str:
        """The export as a string (for small stores and tests)."""
        buffer = io.StringIO(newline="")
        self.export(fmt, buffer)
        return buffer.getvalue()
