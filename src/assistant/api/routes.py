"""The routes: thin handlers over the services (search engine, assistant, feedback store).

Handlers are plain ``def`` (FastAPI runs them in the thread pool): search and answers are CPU and
database work. They return the core objects' ``to_json()`` as a response object, which skips
FastAPI's ``jsonable_encoder`` walk (the core's JSON is plain already).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.api.errors import ERRORS
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
from assistant.ingest.library import UnknownDocument
from assistant.ingest.models import Corpus, Task

if TYPE_CHECKING:
    from assistant.api.app import Services

log = logging.getLogger(__name__)


# --- serialisation helpers ----------------------------------------------------------------------
def task_json(task: Task) -> dict[str, Any]:
    return {"task": task.number, "category_no": task.category_no, "category": task.category,
            "category_en": task.category_en, "section": task.category, "text": task.text,
            "text_en": task.text_en, "differentiated": task.differentiated}


def categories_json(corpus: Corpus) -> list[dict[str, Any]]:
    return [{"number": c.number, "ordinal": c.ordinal, "label": c.label, "title": c.title,
             "title_en": c.title_en, "tasks": [t.number for t in corpus.tasks if t.category_no == c.number]}
            for c in corpus.categories]


def _where(store: Any) -> str:
    """What a store is called in health output: a SQLite file's name, or the redacted PostgreSQL place."""
    path = getattr(store, "path", None)
    return getattr(path, "name", None) or str(path or type(store).__name__)


def health_json(services: Services) -> dict[str, Any]:
    engine = services.need_engine()
    manifest = engine.index.manifest
    store = getattr(services.assistant, "store", None)
    return {
        "status": "ok",
        "doc_number": engine.corpus.meta.doc_number,
        "documents": [d.info() for d in engine.library.documents],
        "tasks": len(engine.corpus.tasks),
        "categories": len(engine.corpus.categories),
        "index": {"build": engine.index.folder.name, "built_at": manifest.get("built_at"),
                  "build_seconds": manifest.get("build_seconds"), "format": manifest.get("format"),
                  "units": manifest.get("units"), "corpus_sha256": manifest.get("corpus_sha256")},
        "embedders": manifest.get("embedder_info") or manifest.get("embedders", []),
        "bm25": bool(manifest.get("bm25")),
        "retrievers": engine.retriever_names,
        "answers": "ready" if services.assistant is not None else f"unavailable: {services.answers_problem}",
        "feedback_db": _where(services.feedback),
        "state": "postgresql" if services.settings.state_dsn else "sqlite",
        "conversation_db": _where(store) if store is not None else None,
        "max_in_flight": services.settings.max_in_flight,
        "index_watch": services.watcher.to_json() if services.watcher else {"watch_seconds": 0},
        "load_seconds": services.load_seconds,
        "uptime_seconds": round(time.time() - services.started_at, 1),
    }


# --- routes ---------------------------------------------------------------------------------------
async def get_services(request: Request) -> Any:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, one more hop per request."""
    return request.app.state.services


ServicesDep = Annotated[Any, Depends(get_services)]  # an assistant.api.app.Services
CategoryParam = Annotated[int | None, Query(description="Category number (1-14); all tasks without it.")]
router = APIRouter()


@router.post("/api/search", response_model=None, tags=["search"],
             responses={200: {"model": SearchBody}, **ERRORS})
def search(body: SearchRequest, services: ServicesDep) -> JSONResponse:
    """Ranked tasks and passages for a question, with the coverage decision (full, partial, none)."""
    engine = services.need_engine()
    document = _document(engine, body.document)
    return JSONResponse(engine.search(body.query, top_k=body.top_k, document=document).to_json())


@router.post("/api/ask", response_model=None, tags=["answers"], responses={200: {"model": AskBody}, **ERRORS})
def ask(body: AskRequest, services: ServicesDep) -> JSONResponse:
    """A cited answer in the language of the question; pass ``conversation_id`` for follow-ups.

    An unknown or expired id is answered in a new conversation, with ``conversation_reset: true``;
    when the conversation store cannot be used the answer is a 503 (retry with the same id).
    """
    assistant = services.need_assistant()
    document = _document(assistant.engine, body.document)
    return JSONResponse(assistant.ask(body.question, conversation_id=body.conversation_id,
                                      document=document).to_json())


def _document(engine: Any, number: str | None) -> str | None:
    """The document filter of a request, checked against the library (422 naming the documents there are)."""
    if number is None:
        return None
    try:
        return engine.library.require(number).number
    except UnknownDocument as exc:
        raise StarletteHTTPException(422, f"'document': {exc}") from exc


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
    """Index build, embedders and the document number, once the service is ready (never shed)."""
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
