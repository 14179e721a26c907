"""RFC 9457 problem details for every error the API answers with.

Body (``application/problem+json``)::

    {"type": "https://facegate.dev/errors/no_face", "title": "No face was found in the image.",
     "status": 422, "code": "no_face", "detail": "...", "instance": "/v1/verify",
     "request_id": "..."}

``code`` is stable (:data:`facegate.errors.ERROR_CODES`); extra fields of the error (e.g.
``retry_after``, ``face_px``) are added as members. Nothing a client sends may produce a stack
trace: unexpected exceptions become ``internal_error`` and are logged server-side only.
"""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from facegate.errors import ERROR_CODES, FacegateError
from facegate.service import metrics

log = logging.getLogger("facegate.service")

PROBLEM_TYPE = "https://facegate.dev/errors/"
PROBLEM_JSON = "application/problem+json"

_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "image_too_large", 415: "unsupported_image", 429: "rate_limited", 503: "not_ready"}


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=_plain).encode("utf-8")


def _plain(value):
    """JSON for values an error's detail may carry (numpy numbers and arrays, anything else as text)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def problem(request: Request | None, exc: FacegateError) -> JSONResponse:
    body = {"type": PROBLEM_TYPE + exc.code, "title": ERROR_CODES[exc.code][1], "status": exc.status,
            "code": exc.code, "detail": exc.message}
    if request is not None:
        body["instance"] = request.url.path
        rid = getattr(request.state, "request_id", None)
        if rid:
            body["request_id"] = rid
    for k, v in exc.detail.items():
        body.setdefault(k, v)
    headers = {}
    if "retry_after" in exc.detail:
        headers["Retry-After"] = str(int(exc.detail["retry_after"]))
    if exc.code == "unauthorized":
        headers["WWW-Authenticate"] = 'ApiKey header="X-API-Key"'
    metrics.ERRORS.labels(exc.code).inc()
    return ProblemResponse(body, status_code=exc.status, headers=headers)


def route_table(app) -> list:
    """Every route of ``app``, each with ``matches(scope)``, ``methods`` and (FastAPI routes)
    ``body_field``. FastAPI keeps included routers lazily: ``fastapi.routing.iter_route_contexts``
    (what its OpenAPI generator walks) resolves them; older versions list the routes themselves."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before lazily included routers
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path answers (a path's GET and POST are separate routes;
    Starlette's own ``Allow`` names only the first route's)."""
    methods: set[str] = set()
    for route in route_table(request.app):
        if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route.methods)
    return sorted(methods)


def _validation_detail(exc: RequestValidationError) -> list[dict]:
    out = []
    for err in exc.errors()[:20]:
        out.append({"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))[:300],
                    "type": str(err.get("type", ""))})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(FacegateError)
    async def facegate_error(request: Request, exc: FacegateError):
        return problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return problem(request, FacegateError("invalid_request", "the request does not match the API schema",
                                              errors=_validation_detail(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code)
        if code is None:
            code = "invalid_request" if 400 <= exc.status_code < 500 else "internal_error"
        message = exc.detail if isinstance(exc.detail, str) and code != "not_found" else None
        response = problem(request, FacegateError(code, message))
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(request)) or (exc.headers or {}).get("Allow", "")
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(request, FacegateError("internal_error"))
