"""The HTTP service: JSON API under ``/api``, health at ``/healthz``, the Gradio UI at ``/``.

``create_app`` wires the core objects into thin routes. The search engine (models and
index) and the assistant are created once, in the lifespan start-up, never per request;
a missing or stale index is built then. Errors always come back as JSON
``{"error": "...", ...}``: validation problems as 4xx with a readable message, anything
unexpected as ``{"error": "internal error"}`` with the traceback only in the server log.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.api.models import (
    AskBody,
    AskRequest,
    CategoryBody,
    ErrorBody,
    FeedbackRequest,
    FeedbackStored,
    HealthBody,
    SearchBody,
    SearchRequest,
    TaskBody,
)
from assistant.api.watcher import IndexWatcher
from assistant.config import Settings, get_settings
from assistant.feedback import FeedbackStore, FeedbackUnavailable
from assistant.ingest.models import Corpus, Task

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid request (the message says which field and why)."},
    503: {"model": ErrorBody, "description": "The service is starting or a component is unavailable."},
}


BODY_UNPARSABLE = ("the request body could not be parsed as JSON: it must be UTF-8 text, nested at most "
                   "about 1,000 levels deep, with whole numbers of at most 4,300 digits")


class ServiceUnavailable(RuntimeError):
    """A component is not ready (still loading) or not installed; maps to HTTP 503."""


# --- the loaded components -------------------------------------------------------------------
@dataclass
class Services:
    """What the routes and the UI use; filled once by the lifespan start-up."""

    settings: Settings
    feedback: FeedbackStore
    engine: Any = None
    assistant: Any = None
    rebuild: str = "if_needed"
    ready: bool = False
    answers_problem: str | None = None
    load_seconds: float | None = None
    started_at: float = field(default_factory=time.time)
    watcher: IndexWatcher | None = None

    def start(self) -> None:
        """Load the engine (building the index when needed) and the assistant, once; watch the index."""
        started = time.perf_counter()
        if self.engine is None:
            from assistant.retrieval.engine import SearchEngine

            log.info("loading the search engine (index %s)", self.settings.index_path)
            self.engine = SearchEngine.load(self.settings, rebuild=self.rebuild)  # type: ignore[arg-type]
        if self.assistant is None:
            self.assistant, self.answers_problem = _make_assistant(self.engine, self.settings)
        warm = getattr(self.assistant, "warm_up", None) or getattr(self.engine, "warm_up", None)
        if warm is not None:
            try:
                warm()
            except Exception as exc:  # a failed warm-up only means a slower first question
                log.warning("warm-up search failed: %s", exc)
        if self.settings.index_watch_seconds > 0 and hasattr(self.engine, "reload"):
            self.watcher = IndexWatcher(self.engine, self.settings.index_watch_seconds).start()
        self.load_seconds = round(time.perf_counter() - started, 3)
        self.ready = True
        log.info("service ready in %.1f s", self.load_seconds)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
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


# --- error bodies -------------------------------------------------------------------------------
def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):  # where, not which field
        parts = parts[1:]
    return ".".join(parts)


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as a sentence a person can act on."""
    kind, name = error.get("type", ""), _field_name(error.get("loc", ()))
    ctx = error.get("ctx") or {}
    if kind in ("empty_text", "text_too_long", "out_of_range", "invalid_text"):
        return str(error["msg"])
    if kind == "extra_forbidden":
        return f"unknown field '{name}'"
    if kind == "missing":
        return f"missing required field '{name}'"
    if kind == "json_invalid":
        return "the request body is not valid JSON"
    if kind in ("model_attributes_type", "dict_type") or (kind.endswith("_type") and not name):
        return "the request body must be a JSON object"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"'{name}' must be an integer, not {error.get('input')!r}"
    if kind == "string_unicode":  # pydantic's own check of constrained strings
        where = f"'{name}'" if name else "the request body"
        return f"{where} contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode text"
    if kind == "string_type":
        return f"'{name}' must be a string"
    if kind == "string_too_long":
        return f"'{name}' is too long: at most {ctx.get('max_length')} characters allowed"
    if kind == "string_too_short":
        return f"'{name}' must not be empty"
    if kind == "too_long":
        return f"'{name}' has too many items: at most {ctx.get('max_length')} allowed"
    if kind == "literal_error":
        return f"'{name}' must be {ctx.get('expected')}"
    message = str(error.get("msg", "invalid value"))
    return f"'{name}': {message[:1].lower()}{message[1:]}" if name else message


def _json_safe(value: Any) -> bool:
    """Whether ``value`` goes into a JSON response as is: no NaN/Infinity, no unpaired surrogates."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def _jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic error dicts minus anything that does not serialise (exceptions in ctx, NaN, surrogates)."""
    clean = []
    for error in errors:
        item = {k: error[k] for k in ("type", "loc", "msg") if k in error}
        item["loc"] = [p if _json_safe(p) else repr(p) for p in item.get("loc", [])]
        if "input" in error:
            value = error["input"]
            if isinstance(value, str) and len(value) > 200:
                value = value[:200] + "…"
            if _json_safe(value) and len(json.dumps(value, ensure_ascii=False)) <= 2_000:
                item["input"] = value
        clean.append(item)
    return clean


def error_response(status: int, message: str, detail: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        message = "; ".join(dict.fromkeys(describe_error(e) for e in errors)) or "invalid request"
        return error_response(422, message, _jsonable_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's words
            message = BODY_UNPARSABLE
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return error_response(503, str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(FeedbackUnavailable)
    async def _feedback(request: Request, exc: FeedbackUnavailable) -> JSONResponse:
        return error_response(503, f"feedback could not be stored: {exc}")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error")


# --- API key, rate limit, body size and encoding for /api/; body size for the UI -----------------
class ApiGuard:
    """Pure ASGI middleware: the API's key, rate limit and body checks, and the UI's body limit.

    For ``/api/*``, from the settings: the API key (``X-API-Key`` or ``Authorization: Bearer``),
    a per-client rate limit (429), the body size (``max_body_bytes``, 413) and its encoding (400).
    Requests with a body to the UI (Gradio's ``POST`` endpoints) get the same size limit, and file
    uploads are refused (the UI has no file inputs; Gradio would otherwise store any upload on
    disk). The UI's streaming (``GET``) is never wrapped.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._swept = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not scope["path"].startswith("/api/"):
            await self._ui(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._key_problem(headers) or self._rate_problem(scope)
        if problem is None:
            body, problem = await self._read_body(receive, headers)
            if problem is None:
                await self.app(scope, _replay(body, receive), _no_sniff(send))
                return
        await problem(scope, receive, _no_sniff(send))

    async def _ui(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].rstrip("/").endswith("/gradio_api/upload"):
            await error_response(404, "file uploads are not accepted here")(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body, problem = await self._read_body(receive, headers, check_encoding=False)
        if problem is None:
            await self.app(scope, _replay(body, receive), send)
        else:
            await problem(scope, receive, send)

    def _key_problem(self, headers: dict[str, str]) -> JSONResponse | None:
        expected = self.settings.api_key
        if not expected:
            return None
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given and hmac.compare_digest(given.encode(), expected.encode()):
            return None
        return error_response(401, "missing or wrong API key (send it as the X-API-Key header)",
                              headers={"WWW-Authenticate": "Bearer"})

    def _rate_problem(self, scope: Scope) -> JSONResponse | None:
        limit = self.settings.rate_limit_per_minute
        if not limit:
            return None
        client = (scope.get("client") or ("unknown", 0))[0]
        now = time.monotonic()
        if now - self._swept > 60:  # forget idle clients, so many addresses cannot grow memory without bound
            self._swept = now
            for idle in [c for c, h in self._hits.items() if not h or now - h[-1] > 60]:
                del self._hits[idle]
        hits = self._hits[client]
        while hits and now - hits[0] > 60:
            hits.popleft()
        if len(hits) >= limit:
            wait = max(1, int(60 - (now - hits[0])) + 1)
            return error_response(429, f"too many requests: at most {limit} per minute; retry in {wait} s",
                                  headers={"Retry-After": str(wait)})
        hits.append(now)
        return None

    async def _read_body(self, receive: Receive, headers: dict[str, str],
                         check_encoding: bool = True) -> tuple[bytes, JSONResponse | None]:
        limit = self.settings.max_body_bytes
        too_big = error_response(413, f"request body too large: at most {limit} bytes")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return b"", too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        return body, _encoding_problem(body, headers) if check_encoding else None


def _encoding_problem(body: bytes, headers: dict[str, str]) -> JSONResponse | None:
    """A 400 naming the first bad byte of a JSON body that is not valid text (FastAPI's own is vague)."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not body or not (content_type == "application/json" or content_type.endswith("+json")):
        return None
    encoding = json.detect_encoding(body)
    try:
        body.decode(encoding)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if encoding.startswith("utf-8") else encoding.upper()
        return error_response(400, f"the request body is not valid {name} text: byte 0x{body[exc.start]:02x} at "
                                   f"position {exc.start} cannot be decoded (send JSON as UTF-8)")
    return None


def _no_sniff(send: Send) -> Send:
    """Add ``X-Content-Type-Options: nosniff``: a browser must never read API JSON as HTML or script."""

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]}
        await send(message)

    return sender


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body to the app, then passes the client's events on."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# --- serialisation helpers ----------------------------------------------------------------------
def task_json(task: Task) -> dict[str, Any]:
    return {"task": task.number, "category_no": task.category_no, "category": task.category,
            "category_en": task.category_en, "section": task.category, "text": task.text,
            "text_en": task.text_en, "differentiated": task.differentiated}


def categories_json(corpus: Corpus) -> list[dict[str, Any]]:
    return [{"number": c.number, "ordinal": c.ordinal, "label": c.label, "title": c.title,
             "title_en": c.title_en, "tasks": [t.number for t in corpus.tasks if t.category_no == c.number]}
            for c in corpus.categories]


def health_json(services: Services) -> dict[str, Any]:
    engine = services.need_engine()
    manifest = engine.index.manifest
    return {
        "status": "ok",
        "doc_number": engine.corpus.meta.doc_number,
        "tasks": len(engine.corpus.tasks),
        "categories": len(engine.corpus.categories),
        "index": {"build": engine.index.folder.name, "built_at": manifest.get("built_at"),
                  "build_seconds": manifest.get("build_seconds"), "format": manifest.get("format"),
                  "units": manifest.get("units"), "corpus_sha256": manifest.get("corpus_sha256")},
        "embedders": manifest.get("embedder_info") or manifest.get("embedders", []),
        "bm25": bool(manifest.get("bm25")),
        "retrievers": engine.retriever_names,
        "answers": "ready" if services.assistant is not None else f"unavailable: {services.answers_problem}",
        "feedback_db": services.feedback.path.name,
        "index_watch": services.watcher.to_json() if services.watcher else {"watch_seconds": 0},
        "load_seconds": services.load_seconds,
        "uptime_seconds": round(time.time() - services.started_at, 1),
    }


# --- routes ---------------------------------------------------------------------------------------
async def get_services(request: Request) -> Services:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, one more hop per request."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
CategoryParam = Annotated[int | None, Query(description="Category number (1-14); all tasks without it.")]
router = APIRouter()


@router.post("/api/search", response_model=None, tags=["search"],
             responses={200: {"model": SearchBody}, **ERRORS})
def search(body: SearchRequest, services: ServicesDep) -> JSONResponse:
    """Ranked tasks and passages for a question, with the in-scope decision."""
    # A response object skips FastAPI's jsonable_encoder walk: the core's to_json() is plain JSON already.
    return JSONResponse(services.need_engine().search(body.query, top_k=body.top_k).to_json())


@router.post("/api/ask", response_model=None, tags=["answers"], responses={200: {"model": AskBody}, **ERRORS})
def ask(body: AskRequest, services: ServicesDep) -> JSONResponse:
    """A cited answer in the language of the question; pass ``conversation_id`` for follow-ups."""
    return JSONResponse(services.need_assistant().ask(body.question, conversation_id=body.conversation_id).to_json())


@router.get("/api/tasks/{number}", response_model=None, tags=["plan"],
            responses={200: {"model": TaskBody}, 404: {"model": ErrorBody}, **ERRORS})
def get_task(number: int, services: ServicesDep) -> dict[str, Any]:
    """One annex task in Chinese and English."""
    corpus = services.need_engine().corpus
    task = corpus.task(number)
    if task is None:
        last = corpus.tasks[-1].number
        raise StarletteHTTPException(
            404, f"no task {number}: the annex of {corpus.meta.doc_number} has tasks 1-{last} "
                 f"(没有第{number}项任务，附件共{len(corpus.tasks)}项)")
    return task_json(task)


@router.get("/api/tasks", response_model=None, tags=["plan"],
            responses={200: {"model": list[TaskBody]}, 404: {"model": ErrorBody}, **ERRORS})
def list_tasks(services: ServicesDep, category: CategoryParam = None) -> list[dict[str, Any]]:
    """The annex tasks, optionally of one category."""
    corpus = services.need_engine().corpus
    if category is not None and corpus.category(category) is None:
        raise StarletteHTTPException(
            404, f"no category {category}: the annex has categories 1-{len(corpus.categories)}")
    return [task_json(t) for t in corpus.tasks if category is None or t.category_no == category]


@router.get("/api/categories", response_model=None, tags=["plan"],
            responses={200: {"model": list[CategoryBody]}, **ERRORS})
def list_categories(services: ServicesDep) -> list[dict[str, Any]]:
    """The 14 task categories with their task numbers."""
    return categories_json(services.need_engine().corpus)


@router.post("/api/feedback", status_code=201, response_model=None, tags=["feedback"],
             responses={201: {"model": FeedbackStored}, **ERRORS})
def feedback(body: FeedbackRequest, services: ServicesDep) -> dict[str, Any]:
    """Store a 👍/👎 rating of an answer (503 when the feedback database is unusable)."""
    if services.settings.log_feedback_text:
        log.info("feedback %s on %r: %r", body.rating, body.question, body.reason)
    row = services.feedback.add(body.rating, body.question, body.answer, body.citations,
                                reason=body.reason, conversation_id=body.conversation_id)
    return {"id": row, "status": "stored"}


@router.get("/healthz", response_model=None, tags=["service"], responses={200: {"model": HealthBody}, **ERRORS})
def healthz(services: ServicesDep) -> dict[str, Any]:
    """Index build, embedders and the document number, once the service is ready."""
    return health_json(services)


@router.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                  include_in_schema=False)
def unknown_endpoint(rest: str, request: Request) -> None:
    """JSON 404/405 for /api paths, which would otherwise fall through to the UI mounted at ``/``."""
    path = request.url.path
    allowed = sorted({m for r in router.routes if getattr(r, "path", None) == path for m in getattr(r, "methods", ())})
    if allowed:
        raise StarletteHTTPException(405, f"{request.method} is not allowed on {path}; use {', '.join(allowed)}",
                                     headers={"Allow": ", ".join(allowed)})
    raise StarletteHTTPException(404, f"no such endpoint: {path} (see /docs)")


# --- the application ------------------------------------------------------------------------------
def create_app(settings: Settings | None = None, engine: Any = None, assistant: Any = None, *,
               feedback_store: FeedbackStore | None = None, rebuild: str = "if_needed",
               ui: bool = True) -> FastAPI:
    """The FastAPI app; pass ``engine``/``assistant`` to reuse loaded ones (tests, the CLI)."""
    settings = settings or get_settings()
    services = Services(settings=settings, feedback=feedback_store or FeedbackStore.from_settings(settings),
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
    _install_error_handlers(app)
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
