"""ASGI middleware: request ids, the request body size limit, and request metrics."""
from __future__ import annotations

import json
import re
import time
import uuid

from facegate.errors import ERROR_CODES, FacegateError
from facegate.service import metrics

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class BodyTooLarge(FacegateError):
    def __init__(self, limit: int):
        super().__init__("image_too_large", f"the request body exceeds {limit} bytes", limit_bytes=limit)


class ServiceMiddleware:
    def __init__(self, app, max_request_bytes: int):
        self.app = app
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", rid.encode())]
            await send(message)

        limit = self.max_request_bytes
        declared = headers.get("content-length")
        try:
            too_big = declared is not None and int(declared) > limit
        except ValueError:
            too_big = True
        if too_big:
            await self._refuse(scope, send_wrapper, rid, BodyTooLarge(limit))
        else:
            received = 0

            async def receive_limited():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            await self.app(scope, receive_limited, send_wrapper)
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        elapsed = time.perf_counter() - started
        metrics.REQUESTS.labels(scope.get("method", ""), path, str(status_holder["status"])).inc()
        metrics.REQUEST_SECONDS.labels(path).observe(elapsed)

    @staticmethod
    async def _refuse(scope, send, rid: str, exc: FacegateError) -> None:
        metrics.ERRORS.labels(exc.code).inc()
        body = json.dumps({"type": "https://facegate.dev/errors/" + exc.code, "title": ERROR_CODES[exc.code][1],
                           "status": exc.status, "code": exc.code, "detail": exc.message,
                           "instance": scope.get("path", ""), "request_id": rid, **exc.detail}).encode()
        await send({"type": "http.response.start", "status": exc.status,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
