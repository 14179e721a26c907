"""The operator console page: static files served by facegate at ``/console/``.

Plain ES modules, no build step, nothing fetched from elsewhere (``facegate/service/console/``),
served with the capture page's discipline (:mod:`facegate.service.capture_page`):

- ``Content-Security-Policy``: scripts, styles and API calls from facegate's own origin only, no
  inline script or style; images from the origin, ``blob:`` (the evidence, fetched by the page
  with its session and shown from memory) and ``data:`` (the TOTP QR code); no framing at all
  (``frame-ancestors 'none'``), no plug-ins, no ``<base>``, no form posts;
- ``Permissions-Policy``: every powerful feature off (the console needs no camera);
- ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.

The API it calls is :mod:`facegate.service.routers.console` (``/console/api/``).
"""
from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

CONSOLE_DIR = Path(__file__).with_name("console")
MOUNT_PATH = "/console"

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
                           "object-src 'none'; frame-ancestors 'none'")
PERMISSIONS_POLICY = ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), hid=(), midi=(), "
                      "display-capture=(), fullscreen=(self)")
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"permissions-policy", PERMISSIONS_POLICY.encode()),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class ConsoleHeaders:
    """ASGI wrapper adding the console's headers to every answer of the wrapped app."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k for k, _ in HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount(app) -> None:
    """Serve the console at ``/console/`` (after the API routes, which take ``/console/api/``)."""
    if any(getattr(r, "path", None) == MOUNT_PATH for r in app.router.routes):
        return
    app.mount(MOUNT_PATH, ConsoleHeaders(StaticFiles(directory=CONSOLE_DIR, html=True, check_dir=True)),
              name="console")
