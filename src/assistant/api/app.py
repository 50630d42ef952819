"""The HTTP service: JSON API under ``/api``, health at ``/healthz``, the Gradio UI at ``/``.

This module is the app factory and the service container only. The routes are in
:mod:`assistant.api.routes`, admission control (API key, rate limit, body checks, overload
shedding) in :mod:`assistant.api.guard`, and error translation in :mod:`assistant.api.errors`.
The search engine (models and index) and the assistant are created once, in the lifespan
start-up, never per request; a missing or stale index is built then. Conversations and feedback
live in the shared state store (SQLite files by default, PostgreSQL with ``ASSISTANT_STATE_DSN``),
so any worker can answer any turn and a restart forgets nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from assistant.api.errors import ServiceUnavailable, install_error_handlers
from assistant.api.guard import ApiGuard
from assistant.api.routes import router
from assistant.api.watcher import IndexWatcher
from assistant.config import Settings, get_settings
from assistant.state import open_feedback_store

__all__ = ["LateBound", "ServiceUnavailable", "Services", "app_factory", "create_app"]

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the routes and the UI use; filled once by the lifespan start-up."""

    settings: Settings
    feedback: Any  # assistant.feedback.FeedbackStore or its PostgreSQL twin (same public methods)
    engine: Any = None
    assistant: Any = None
    rebuild: str = "if_needed"
    ready: bool = False
    answers_problem: str | None = None
    load_seconds: float | None = None
    started_at: float = field(default_factory=time.time)
    watcher: IndexWatcher | None = None
    owns_assistant: bool = False

    def start(self) -> None:
        """Load the engine (building the index when needed) and the assistant, once; watch the index."""
        started = time.perf_counter()
        if self.engine is None:
            from assistant.retrieval.engine import SearchEngine

            log.info("loading the search engine (index %s)", self.settings.index_path)
            self.engine = SearchEngine.load(self.settings, rebuild=self.rebuild)  # type: ignore[arg-type]
        if self.assistant is None:
            self.assistant, self.answers_problem = _make_assistant(self.engine, self.settings)
            self.owns_assistant = self.assistant is not None
        warm = getattr(self.assistant, "warm_up", None) or getattr(self.engine, "warm_up", None)
        if warm is not None:
            try:
                warm()
            except Exception as exc:  # a failed warm-up only means a slower first question
                log.warning("warm-up failed: %s", exc)
        if self.settings.index_watch_seconds > 0 and hasattr(self.engine, "reload"):
            self.watcher = IndexWatcher(self.engine, self.settings.index_watch_seconds).start()
        self.load_seconds = round(time.perf_counter() - started, 3)
        self.ready = True
        log.info("service ready in %.1f s", self.load_seconds)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.owns_assistant:
            with suppress(Exception):
                self.assistant.close()
        self.feedback.close()

    def need_engine(self) -> Any:
        if self.engine is None or not self.ready:
            raise ServiceUnavailable("the search engine is still loading; try again in a few seconds")
        return self.engine

    def need_assistant(self) -> Any:
        self.need_engine()
        if self.assistant is None:
            raise ServiceUnavailable(f"answers are unavailable: {self.answers_problem or 'no answer layer'}")
        return self.assistant


def _make_assistant(engine: Any, settings: Settings) -> tuple[Any, str | None]:
    """The answer layer's ``Assistant``; search keeps working when it is not installed."""
    try:
        from assistant.answer.chat import Assistant
    except ModuleNotFoundError as exc:
        if exc.name != "assistant.answer.chat":
            raise
        log.warning("assistant.answer.chat is not installed: /api/ask and the chat are disabled")
        return None, "the answer layer (assistant.answer.chat) is not installed"
    return Assistant(engine, settings), None


class LateBound:
    """Stands in for a component the lifespan loads later (the UI is built before start-up)."""

    def __init__(self, resolve: Callable[[], Any]) -> None:
        self._resolve = resolve

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)


def create_app(settings: Settings | None = None, engine: Any = None, assistant: Any = None, *,
               feedback_store: Any = None, rebuild: str = "if_needed", ui: bool = True) -> FastAPI:
    """The FastAPI app; pass ``engine``/``assistant`` to reuse loaded ones (tests, the CLI)."""
    settings = settings or get_settings()
    services = Services(settings=settings, feedback=feedback_store or open_feedback_store(settings),
                        engine=engine, assistant=assistant, rebuild=rebuild)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The pool that runs the blocking (plain ``def``) handlers: ASSISTANT_THREADPOOL_SIZE threads.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        await asyncio.to_thread(services.start)
        try:
            yield
        finally:
            services.close()

    # FastAPIOffline serves Swagger UI's scripts from the package: the stock /docs loads them from a
    # CDN and stays blank on an air-gapped network.
    app = FastAPIOffline(title="Policy assistant for 厦府〔2026〕88号",
                         description="Cited answers and search over Xiamen's service-industry opening-up pilot "
                                     "plan (111 annex tasks in 14 categories). The chat UI is at `/`.",
                         version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.services = services
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(ApiGuard, settings=settings)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"])
    if ui:
        _mount_ui(app, services)
    return app


def _mount_ui(app: FastAPI, services: Services) -> None:
    import gradio as gr

    from assistant.web.gradio_app import build_ui, ui_css, ui_theme

    blocks = build_ui(LateBound(services.need_assistant), LateBound(services.need_engine), services.feedback,
                      services.settings)
    gr.mount_gradio_app(app, blocks, path="/", ssr_mode=False, show_error=False, footer_links=["settings"],
                        theme=ui_theme(), css=ui_css(), server_name=services.settings.host,
                        server_port=services.settings.port)


def app_factory() -> FastAPI:
    """Factory for ``uvicorn --factory assistant.api.app:app_factory`` (one app per worker)."""
    return create_app(get_settings())
