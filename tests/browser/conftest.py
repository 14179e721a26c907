"""The capture page (/capture/) in a real browser: Debian's ``chromium`` driven by Playwright
for Python, its camera fed from a clip of ``../shared/data/face-videos`` converted to .y4m at
test time (``--use-file-for-fake-video-capture``), against a real ``facegate serve`` on loopback
(one per module).

Without the evaluation data the tests skip (fail with FACEGATE_REQUIRE_SHARED=1). Without
Chromium or Playwright they skip with a message, except in CI (``CI=true``) or with
``FACEGATE_REQUIRE_BROWSER=1``, where they fail: scripts/test.sh installs Chromium with apt where
it is missing, and ``playwright`` is in the ``test`` extra (Playwright's own browser download is
not used). ``FACEGATE_CHROMIUM`` names another Chromium binary. Screenshots of every step go to
``tests/browser/screenshots/`` (ignored by git).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import need_shared

from .support import chromium_path, missing
from .y4m import clip_y4m, still_y4m


@pytest.fixture(scope="package")
def playwright_api():
    """Playwright's sync API for the browser tests only: it runs an event loop in this thread
    while it is open, which would break ``asyncio.run`` in the tests that come after."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright for Python is not installed (pip install -e '.[test]')")
    chromium_path()
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def videos() -> Path:
    return need_shared("data", "face-videos")


@pytest.fixture(scope="session")
def y4m_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("y4m")


@pytest.fixture(scope="session")
def clip(videos, y4m_dir):
    """``clip("d0", 0.0, 3.12)``: that segment of the clip as a y4m (forwards, then backwards)."""
    made = {}

    def make(name: str, start: float, end: float) -> Path:
        key = (name, start, end)
        if key not in made:
            made[key] = clip_y4m(videos / f"{name}.mp4", y4m_dir / f"{name}_{start}_{end}.y4m", start, end)
        return made[key]

    return make


@pytest.fixture(scope="session")
def still(videos, y4m_dir):
    """``still("d0", 0.5)``: one frame of the clip repeated (a photo held up) as a y4m."""
    def make(name: str, at: float) -> Path:
        return still_y4m(videos / f"{name}.mp4", y4m_dir / f"{name}_still_{at}.y4m", at)
    return make
