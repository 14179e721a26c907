"""What the image tests share: podman with the project's settings, and skip-or-fail.

The image tests (tests/image) build the image with scripts/build-image.sh and start containers
with Debian's podman; tests/test_alerts.py runs promtool. Without those tools they skip with a
message, unless ``FACEGATE_REQUIRE_IMAGE=1`` (set by .ci/run), where they fail instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRE = "FACEGATE_REQUIRE_IMAGE"


def need(ok: bool, message: str) -> None:
    """Skip with ``message`` unless ``ok``; fail instead when FACEGATE_REQUIRE_IMAGE=1."""
    if ok:
        return
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{message}; {REQUIRE}=1 makes this a failure")
    pytest.skip(message)


def engine_env() -> dict:
    """The environment for podman and podman-compose: scripts/podman/containers.conf unless
    CONTAINERS_CONF names another file (as scripts/build-image.sh does)."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF")
            or str(REPO / "scripts" / "podman" / "containers.conf")}


def need_podman() -> None:
    need(shutil.which("podman") is not None and (shutil.which("runc") or os.path.exists("/usr/sbin/runc")),
         "podman and runc are not installed (scripts/test.sh installs Debian's as root)")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], env=engine_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


def wait_ready(url: str, timeout: float, what: str, log=lambda: "") -> float:
    """Wait until ``url``/readyz answers 200; the seconds it took."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        try:
            r = httpx.get(url + "/readyz", timeout=5)
            if r.status_code == 200:
                return time.monotonic() - started
            last = f"{r.status_code} {r.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    raise AssertionError(f"{what} not ready within {timeout:.0f} s (last: {last}): {log()}")


def create_key(container: str, role: str = "admin") -> str:
    """An API key made inside the container with the real CLI."""
    import json
    out = podman("exec", container, "facegate", "keys", "create", "--role", role, "--json").stdout
    return json.loads(out)["key"]


def enrol(client: httpx.Client, url: str, key: str, subject: str, photo: bytes) -> None:
    h = {"X-API-Key": key}
    r = client.post(url + "/v1/subjects", json={"subject_id": subject}, headers=h)
    assert r.status_code == 201, r.text
    r = client.post(url + f"/v1/subjects/{subject}/faces", files={"image": ("e.jpg", photo, "image/jpeg")},
                    headers=h, timeout=120)
    assert r.status_code == 201, r.text


def verify(client: httpx.Client, url: str, key: str, subject: str, photo: bytes) -> httpx.Response:
    return client.post(url + "/v1/verify", data={"subject_id": subject}, files={"image": ("p.jpg", photo, "image/jpeg")},
                       headers={"X-API-Key": key}, timeout=120)
