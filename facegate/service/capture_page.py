"""The liveness capture page: static files served by facegate at ``/capture/``.

``mount(app)`` adds a read-only ``StaticFiles`` mount of ``facegate/service/capture/`` (plain ES
modules, no build step, nothing fetched from elsewhere) wrapped in a small ASGI layer that sets
the page's security headers on every answer under ``/capture/``:

- ``Content-Security-Policy``: scripts, styles and API calls from facegate's own origin only, no
  inline script or style, no plug-ins, no ``<base>``, no form posts; ``frame-ancestors`` allows
  facegate's own origin and the ``embed_origins`` (integrator pages that show the page in an
  iframe, see docs/capture.md);
- ``Permissions-Policy: camera=(self)`` and every other powerful feature off;
- ``Cache-Control: no-store`` (a kiosk keeps nothing of a person), ``X-Content-Type-Options:
  nosniff``, ``Referrer-Policy: no-referrer``;
- ``Access-Control-Allow-Origin`` for an ``embed_origins`` origin, so that an integrator page can
  ``import`` ``facegate-capture.js`` as a module across origins.

The page itself never holds an API key: it takes a liveness session's capture token (see
:mod:`facegate.liveness.tokens`) from its URL fragment or from a ``postMessage`` of the page that
embeds it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

CAPTURE_DIR = Path(__file__).with_name("capture")
MOUNT_PATH = "/capture"

PERMISSIONS_POLICY = ("camera=(self), microphone=(), geolocation=(), payment=(), usb=(), serial=(), "
                      "hid=(), midi=(), display-capture=(), screen-wake-lock=(self), "
                      "fullscreen=(self)")


def content_security_policy(embed_origins: Iterable[str] = ()) -> str:
    ancestors = " ".join(["'self'", *embed_origins])
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "media-src 'self' blob: mediastream:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
            f"base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors {ancestors}")


def _origins(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        item = item.strip().rstrip("/")
        if item == "*":
            raise ValueError("the capture page cannot be embedded by every origin ('*'): list the origins")
        if item:
            if not (item.startswith("https://") or item.startswith("http://")) or any(c in item for c in " ;'\""):
                raise ValueError(f"not an origin: {item!r} (use scheme://host[:port])")
            out.append(item)
    return out


class CaptureHeaders:
    """ASGI wrapper that adds the capture page's headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp, embed_origins: Iterable[str] = ()):
        self.app = app
        self.embed_origins = set(embed_origins)
        self.headers = [
            (b"content-security-policy", content_security_policy(sorted(self.embed_origins)).encode()),
            (b"permissions-policy", PERMISSIONS_POLICY.encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        origin = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"origin"), None)
        extra = list(self.headers)
        if origin and origin in self.embed_origins:
            extra += [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k for k, _ in extra}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mounted(app) -> bool:
    return any(getattr(r, "path", None) == MOUNT_PATH for r in app.router.routes)


def mount(app, embed_origins: str | Iterable[str] | None = None) -> None:
    """Serve the capture page at ``/capture/`` (idempotent). ``embed_origins``: the origins of
    integrator pages allowed to embed it in an iframe or import ``facegate-capture.js``
    (comma-separated, e.g. the service's ``FACEGATE_CORS_ORIGINS``)."""
    if mounted(app):
        return
    files = StaticFiles(directory=CAPTURE_DIR, html=True, check_dir=True)
    app.mount(MOUNT_PATH, CaptureHeaders(files, _origins(embed_origins)), name="capture")
