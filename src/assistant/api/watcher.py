"""Swap a newly published index into a running service, without a restart or a failed request.

``policy-assistant ingest`` publishes a build by replacing the ``index/current`` symlink. A
background thread here polls that link every ``ASSISTANT_INDEX_WATCH_SECONDS``; when it points
somewhere new it calls ``SearchEngine.reload()``, which loads and verifies the build and then
publishes it as one immutable snapshot. Requests already running finish on the old snapshot,
later ones use the new; none waits for the load. A build the engine refuses (corrupt, or made
from another corpus) is logged once and the old index keeps serving. With the PostgreSQL backend
it polls the database's published version instead (workers on other machines swap too).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class IndexWatcher:
    """Polls ``<index>/current`` of ``engine`` and reloads it when another build is published."""

    def __init__(self, engine: Any, interval: float) -> None:
        self.engine = engine
        self.interval = interval
        self.swaps = 0
        self.last_swap: float | None = None
        self.last_error: str | None = None
        self._refused: str | None = None  # the build last refused, so its error is logged once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _published(self) -> str | None:
        """Where ``current`` points now (resolved), or None while there is no index."""
        link = Path(self.engine.settings.index_path) / "current"
        try:
            return os.path.realpath(link) if os.path.lexists(link) else None
        except OSError:
            return None

    def check(self) -> bool:
        """One poll: reload when ``current`` names another build; True when a new build was swapped in.

        With the PostgreSQL backend the published version lives in the database, not in a local
        link: every poll asks ``reload()``, which costs one query while the version is unchanged.
        """
        from assistant.index.store import IndexProblem

        if self.engine.settings.backend == "postgres":
            return self._reload_published(IndexProblem)
        published = self._published()
        if published is None or published == os.path.realpath(self.engine.index.folder):
            return False
        if published == self._refused:
            return False
        try:
            changed = bool(self.engine.reload())
        except (IndexProblem, OSError) as exc:
            # the build may be pruned under us, or need a restart (another corpus): keep serving the old one
            self._refused = published
            self.last_error = f"{Path(published).name}: {exc}"
            log.warning("index watcher: not swapping in %s: %s; still serving %s", Path(published).name, exc,
                        self.engine.index.folder.name)
            return False
        self._refused = None
        if changed:
            self.swaps += 1
            self.last_swap = time.time()
            self.last_error = None
            log.info("index watcher: now serving build %s", self.engine.index.folder.name)
        return changed

    def _reload_published(self, problem: type[Exception]) -> bool:
        try:
            changed = bool(self.engine.reload())
        except (problem, OSError) as exc:  # the database is down or holds a version this worker refuses
            if str(exc) != self.last_error:
                log.warning("index watcher: keeping the loaded version: %s", exc)
            self.last_error = str(exc)
            return False
        self.last_error = None
        if changed:
            self.swaps += 1
            self.last_swap = time.time()
            log.info("index watcher: now serving published version %s", self.engine.index.folder)
        return changed

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise; the service keeps its index
                log.exception("index watcher: unexpected error")

    def start(self) -> IndexWatcher:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="index-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval * 2))
            self._thread = None

    def to_json(self) -> dict[str, Any]:
        return {"watch_seconds": self.interval, "swaps": self.swaps,
                "last_swap": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_swap))
                if self.last_swap else None, "last_error": self.last_error}
