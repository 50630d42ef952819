"""Error translation: every failure leaves the API as JSON ``{"error": "...", ...}``.

Validation problems are 4xx with a readable message (``describe_error`` turns each pydantic error
into a sentence); components that are loading or whose database cannot be used are 503 with
``Retry-After``; anything unexpected is ``{"error": "internal error"}`` with the traceback only in
the server log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.api.models import ErrorBody
from assistant.feedback import FeedbackUnavailable
from assistant.index.manifest import IndexUnavailable
from assistant.state import ConversationUnavailable

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid request (the message says which field and why)."},
    503: {"model": ErrorBody, "description": "The service is starting, busy, or a component is unavailable "
                                             "(retry after the Retry-After header's seconds)."},
}

BODY_UNPARSABLE = ("the request body could not be parsed as JSON: it must be UTF-8 text, nested at most "
                   "about 1,000 levels deep, with whole numbers of at most 4,300 digits")


class ServiceUnavailable(RuntimeError):
    """A component is not ready (still loading) or not installed; maps to HTTP 503."""


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):  # where, not which field
        parts = parts[1:]
    return ".".join(parts)


_PLAIN = {"extra_forbidden": "unknown field '{name}'", "missing": "missing required field '{name}'",
          "json_invalid": "the request body is not valid JSON", "string_type": "'{name}' must be a string",
          "string_too_long": "'{name}' is too long: at most {max_length} characters allowed",
          "string_too_short": "'{name}' must not be empty",
          "too_long": "'{name}' has too many items: at most {max_length} allowed",
          "literal_error": "'{name}' must be {expected}"}
_INTEGER = ("int_parsing", "int_type", "int_from_float")


def describe_error(error: dict[str, Any]) -> str:
    """One pydantic error as a sentence a person can act on."""
    kind, name = error.get("type", ""), _field_name(error.get("loc", ()))
    ctx = error.get("ctx") or {}
    if kind in ("empty_text", "text_too_long", "out_of_range", "invalid_text"):
        return str(error["msg"])
    if kind in ("model_attributes_type", "dict_type") or (kind.endswith("_type") and not name):
        return "the request body must be a JSON object"
    if kind in _INTEGER:
        return f"'{name}' must be an integer, not {error.get('input')!r}"
    if kind == "string_unicode":  # pydantic's own check of constrained strings
        where = f"'{name}'" if name else "the request body"
        return f"{where} contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode text"
    if kind in _PLAIN:
        return _PLAIN[kind].format(name=name, max_length=ctx.get("max_length"), expected=ctx.get("expected"))
    message = str(error.get("msg", "invalid value"))
    return f"'{name}': {message[:1].lower()}{message[1:]}" if name else message


def _json_safe(value: Any) -> bool:
    """Whether ``value`` goes into a JSON response as is: no NaN/Infinity, no unpaired surrogates."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        message = "; ".join(dict.fromkeys(describe_error(e) for e in errors)) or "invalid request"
        return error_response(422, message, jsonable_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's words
            message = BODY_UNPARSABLE
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return error_response(503, str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(IndexUnavailable)
    async def _index(request: Request, exc: IndexUnavailable) -> JSONResponse:
        # the search backend's database is down or busy: a retryable condition, not a bug
        return error_response(503, f"the search index is unavailable, try again shortly: {exc}",
                              headers={"Retry-After": "5"})

    @app.exception_handler(FeedbackUnavailable)
    async def _feedback(request: Request, exc: FeedbackUnavailable) -> JSONResponse:
        return error_response(503, f"feedback could not be stored: {exc}")

    @app.exception_handler(ConversationUnavailable)
    async def _conversations(request: Request, exc: ConversationUnavailable) -> JSONResponse:
        # Never answered in a silent new conversation: the client keeps its id and retries.
        return error_response(503, f"the conversation could not be read or stored, try again shortly: {exc}",
                              headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error")
