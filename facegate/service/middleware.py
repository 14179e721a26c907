"""ASGI middleware: request ids, the refusals made before the app reads a body, the request body
size limit, and request metrics.

Before the app sees a request, in this order (each an RFC 9457 problem, ``Connection: close``
when the body was not read):

1. **No credential, no body**: a ``/v1`` request that carries neither an ``X-API-Key`` nor an
   ``Authorization: Bearer`` liveness capture token (``fgc_...``) is refused 401
   ``unauthorized`` without reading its body, so that an anonymous caller learns nothing about
   body parsing and costs no parsing. This is only a presence check: the key itself is checked
   by the route's dependency (:func:`facegate.service.deps.require`), which answers 401 for a
   wrong key as before. CORS preflights (``OPTIONS``) pass. The refusal is audited like the
   dependency's (``auth.refused``, actor ``anonymous``, at most
   :data:`facegate.storage.audit.REFUSALS_PER_MINUTE` per source address).
2. **Declared size**: a ``Content-Length`` over ``FACEGATE_MAX_REQUEST_BYTES`` is 413
   ``image_too_large``.
3. **Path and query text**: a path or query value holding a control, bidi override or
   surrogate character (:func:`facegate.service.schemas.unsafe_char`) is 422 ``invalid_request``.

Every answer under ``/console/api/`` (the operators' console: personal data, the CSRF token),
refusals and errors included, carries ``Cache-Control: no-store`` and ``Pragma: no-cache``,
whatever the route set.

Then, for a **model route** (a route whose JSON body FastAPI parses into a Pydantic model:
``POST /v1/subjects``, ``PATCH /v1/subjects/{id}``), the body is read here, at most
:data:`facegate.service.uploads.MAX_MODEL_BODY` bytes (413 past it), and parsed by the API's
strict JSON rules (:func:`facegate.service.uploads.parse_json`: no duplicate keys, no
NaN/Infinity, bounded depth; 422) before FastAPI parses it again, leniently, for the model.
FastAPI reads such a body before any dependency runs, so this check, like FastAPI's own, comes
before the key check (but after step 1); the small cap bounds what an unauthenticated caller
can make the server parse. Every other body is parsed by the route after its key check
(:mod:`facegate.service.uploads`).

While the app reads the body, a body that grows past the limit (chunked, or a lying
``Content-Length``) stops the read, and the answer is 413 ``image_too_large`` **whatever the
app made of the failed read** (FastAPI turns a failed body read of a model route into a 400,
which would have answered 422).
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from urllib.parse import parse_qsl

from fastapi import params
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Match

from facegate.errors import FacegateError
from facegate.liveness import tokens
from facegate.service import auditing, metrics
from facegate.service.errors import problem, route_table
from facegate.service.schemas import unsafe_char
from facegate.service.uploads import MAX_MODEL_BODY, parse_json

log = logging.getLogger("facegate.service")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NO_STORE_PREFIX = "/console/api/"
NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


class BodyTooLarge(FacegateError):
    def __init__(self, limit: int):
        super().__init__("image_too_large", f"the request body exceeds {limit} bytes", limit_bytes=limit)


def has_credential(headers: dict[str, str]) -> bool:
    """An ``X-API-Key`` or a capture token is present (not: valid)."""
    if headers.get("x-api-key", "").strip():
        return True
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    return scheme.lower() == "bearer" and token.strip().startswith(tokens.PREFIX)


def unsafe_target(scope) -> str | None:
    """Why the path or a query name/value is refused (the text rule), or None."""
    bad = unsafe_char(scope.get("path", ""))
    if bad:
        return f"the path contains the control or bidi character {bad}"
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        bad = unsafe_char(name) or unsafe_char(value)
        if bad:
            return f"query parameter {name[:64]!r} contains the control or bidi character {bad}"
    return None


def is_json(headers: dict[str, str]) -> bool:
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))


def model_routes(app) -> list:
    """The routes of ``app`` whose body FastAPI parses as JSON into a model."""
    return [r for r in route_table(app) if getattr(r, "body_field", None) is not None
            and not isinstance(r.body_field.field_info, params.Form)]


async def read_body(receive, cap: int) -> tuple[list[dict], bytes]:
    """The request's messages up to the end of its body, and the body; over ``cap`` bytes:
    :class:`BodyTooLarge`."""
    messages, chunks, size = [], [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(cap)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return messages, b"".join(chunks)


class ServiceMiddleware:
    def __init__(self, app, max_request_bytes: int):
        self.app = app
        self.max_request_bytes = max_request_bytes
        self._model_routes: list | None = None    # found on the first JSON request (routes are fixed by then)

    def _model_body(self, scope, headers: dict[str, str]) -> bool:
        if not is_json(headers) or "app" not in scope:
            return False
        if self._model_routes is None:
            self._model_routes = model_routes(scope["app"])
        return any(r.matches(scope)[0] == Match.FULL for r in self._model_routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status_holder = {"status": 500}
        no_store = (scope.get("path", "") + "/").startswith(NO_STORE_PREFIX)

        async def send_out(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]
                if no_store:
                    headers = [(k, v) for k, v in headers if k.lower() not in (b"cache-control", b"pragma")] + NO_STORE
                message["headers"] = headers
            await send(message)

        try:
            refusal = self._refusal(scope, headers)
            if refusal is not None:
                if refusal.code == "unauthorized":
                    await self._audit_refusal(scope, refusal)
                await self._refuse(scope, receive, send_out, refusal, close=True)
            else:
                await self._limited(scope, receive, send_out, headers)
        finally:  # an unexpected error (answered 500 further out) is counted too
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            metrics.REQUESTS.labels(scope.get("method", ""), path, str(status_holder["status"])).inc()
            metrics.REQUEST_SECONDS.labels(path).observe(elapsed)

    def _refusal(self, scope, headers: dict[str, str]) -> FacegateError | None:
        """The refusal due before the body is read (the order of the module docstring), or None."""
        path = scope.get("path", "")
        if (path == "/v1" or path.startswith("/v1/")) and scope.get("method") != "OPTIONS" \
                and not has_credential(headers):
            return FacegateError("unauthorized", "send an X-API-Key header (or a liveness capture token on "
                                 "that session's capture routes)")
        declared = headers.get("content-length")
        try:
            too_big = declared is not None and int(declared) > self.max_request_bytes
        except ValueError:
            too_big = True
        if too_big:
            return BodyTooLarge(self.max_request_bytes)
        reason = unsafe_target(scope)
        if reason:
            return FacegateError("invalid_request", reason)
        return None

    async def _limited(self, scope, receive, send_out, headers: dict[str, str]) -> None:
        """Run the app with the body limit; past it, the answer is 413 whatever the app sends.
        A model route's JSON body is read and parsed strictly first."""
        limit = self.max_request_bytes
        received = 0
        over = False
        answered = False

        async def receive_limited():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge(limit)
            return message

        async def send_app(message):
            nonlocal answered
            if not over:
                if message["type"] == "http.response.start":
                    answered = True
                return await send_out(message)
            if message["type"] == "http.response.start" and not answered:
                answered = True
                await self._refuse(scope, receive, send_out, BodyTooLarge(limit), close=True)
            # the app's own answer to the failed read is dropped

        receive_app = receive_limited
        if self._model_body(scope, headers):
            try:
                messages, body = await read_body(receive_limited, min(limit, MAX_MODEL_BODY))
                if body.strip():
                    parse_json(body)
            except FacegateError as exc:
                await self._refuse(scope, receive, send_out, exc, close=isinstance(exc, BodyTooLarge))
                return

            async def receive_app():
                return messages.pop(0) if messages else await receive_limited()

        try:
            await self.app(scope, receive_app, send_app)
        except Exception:
            if not over or answered:
                raise
            answered = True
            await self._refuse(scope, receive, send_out, BodyTooLarge(limit), close=True)

    @staticmethod
    async def _audit_refusal(scope, exc: FacegateError) -> None:
        """``auth.refused`` for a call without a credential, as the route's dependency records a
        wrong key; the answer does not wait on the audit trail being reachable."""
        st = getattr(getattr(scope.get("app"), "state", None), "facegate", None)
        if st is None:
            return
        try:
            await run_in_threadpool(auditing.record_refusal, st, Request(scope), None, exc)
        except Exception as err:  # the database may be down: the 401 stands, the log says why
            log.warning("could not audit a refused call to %s: %s", scope.get("path", "")[:200], err)

    @staticmethod
    async def _refuse(scope, receive, send, exc: FacegateError, close: bool) -> None:
        response = problem(Request(scope), exc)
        if close:
            response.headers["connection"] = "close"
        await response(scope, receive, send)
