"""``python tests/browser/serve_capture.py ARGS``: ``facegate ARGS`` with the capture page mounted.

The service mounts the page itself once ``create_app`` calls ``capture_page.mount``; until then
(and harmlessly after: ``mount`` is idempotent) the browser tests start their server through
this wrapper, which mounts it on the app that ``facegate serve`` builds.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import facegate.service.app as app_module  # noqa: E402
from facegate.service import capture_page  # noqa: E402

_create_app = app_module.create_app


def create_app(settings=None):
    app = _create_app(settings)
    capture_page.mount(app, os.environ.get("FACEGATE_CORS_ORIGINS", ""))
    return app


app_module.create_app = create_app

if __name__ == "__main__":
    from facegate.cli import main
    raise SystemExit(main(sys.argv[1:]))
