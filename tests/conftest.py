"""Shared fixtures. Tests run on the real model pack (``FACEGATE_MODEL_DIR``) and read the
evaluation data from ``../shared`` (or ``FACEGATE_SHARED``). Without the data they skip with a
message, unless ``FACEGATE_REQUIRE_SHARED=1`` (set by .ci/run), where they fail instead."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The service asks for consent by default (FACEGATE_CONSENT_REQUIRED, docs/compliance.md). The tests of
# matching, liveness and storage enrol and capture without a notice; the compliance tests and the
# capture page's browser tests turn it on for their own servers.
os.environ.setdefault("FACEGATE_CONSENT_REQUIRED", "0")
os.environ.setdefault("FACEGATE_RETENTION_INTERVAL_S", "0")    # the in-service purge: on in tests/test_retention.py


def shared_dir() -> Path | None:
    env = os.environ.get("FACEGATE_SHARED")
    candidate = Path(env) if env else REPO.parent / "shared"
    return candidate if (candidate / "data").is_dir() else None


def need_shared(*parts: str) -> Path:
    """The path under ../shared, or skip (fail in CI) when it is absent."""
    root = shared_dir()
    path = root.joinpath(*parts) if root else None
    if path is None or not path.exists():
        msg = f"evaluation data {'/'.join(parts)} not found (looked in ../shared and $FACEGATE_SHARED)"
        if os.environ.get("FACEGATE_REQUIRE_SHARED") == "1":
            pytest.fail(msg + "; FACEGATE_REQUIRE_SHARED=1 makes this a failure")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return need_shared()


@pytest.fixture(scope="session")
def lfw_images() -> Path:
    return need_shared("data", "lfw-dev", "images")


@pytest.fixture(scope="session")
def settings():
    from facegate.config import Settings
    return Settings.load()


@pytest.fixture(scope="session")
def engine(settings):
    """The face engine on the real default pack (built by ``facegate models build``)."""
    from facegate.engine import FaceEngine
    return FaceEngine.load(settings)


@pytest.fixture(scope="session")
def face_photo(lfw_images) -> bytes:
    return (lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg").read_bytes()
