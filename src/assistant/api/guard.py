"""Admission control for the API: key, rate limit, body checks, and overload shedding.

``ApiGuard`` is pure ASGI middleware. For ``/api/*``, from the settings: the API key (``X-API-Key``
or ``Authorization: Bearer``, 401), a per-client rate limit (429), the body size (``max_body_bytes``,
413) and its encoding (400), then the overload bound: at most ``max_in_flight`` API requests are
handled at once in this worker, and the next one is answered ``503`` with ``Retry-After: 1`` at once
instead of queueing behind the others (a queue only turns overload into timeouts for everyone; a
quick "busy" lets the client or the load balancer retry another worker). ``/healthz`` and the UI
are never shed. Requests with a body to the UI (Gradio's ``POST`` endpoints) get the same size
limit, and file uploads are refused (the UI has no file inputs; Gradio would otherwise store any
upload on disk). The UI's streaming (``GET``) is never wrapped.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import defaultdict, deque

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.api.errors import error_response
from assistant.config import Settings

log = logging.getLogger(__name__)

BUSY_RETRY_AFTER = "1"


class ApiGuard:
    """The API's key, rate limit, body checks and in-flight bound, and the UI's body limit."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._swept = time.monotonic()
        self.in_flight = 0  # one event loop per worker: plain integer updates are atomic here
        self.shed = 0

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
                problem = self._busy_problem()
            if problem is None:
                self.in_flight += 1
                try:
                    await self.app(scope, _replay(body, receive), _no_sniff(send))
                finally:
                    self.in_flight -= 1
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

    def _busy_problem(self) -> JSONResponse | None:
        limit = self.settings.max_in_flight
        if not limit or self.in_flight < limit:
            return None
        self.shed += 1
        if self.shed == 1 or self.shed % 100 == 0:
            log.warning("overloaded: %d requests in flight (ASSISTANT_MAX_IN_FLIGHT=%d); %d shed so far",
                        self.in_flight, limit, self.shed)
        return error_response(503, f"service busy: {self.in_flight} requests are being answered (at most {limit} "
                                   f"at once); retry in {BUSY_RETRY_AFTER} s",
                              headers={"Retry-After": BUSY_RETRY_AFTER})

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
        return body, encoding_problem(body, headers) if check_encoding else None


def encoding_problem(body: bytes, headers: dict[str, str]) -> JSONResponse | None:
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
