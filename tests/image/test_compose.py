"""deploy/compose.yaml started for real with podman-compose: PostgreSQL, two replicas, nginx.

Images from scripts/build-image.sh --deploy (the fixture ``images``), a project of its own and
a free host port for nginx. Enrolment and verification go through the nginx port; one replica
stopped, the other answers; PostgreSQL restarted, both replicas turn ready again by themselves.
"""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import httpx
import pytest

from conftest import need_shared
from service_support import free_port

from .support import REPO, create_key, engine_env, enrol, need, podman, verify, wait_ready

pytestmark = pytest.mark.slow

UP_TIMEOUT_S = 300


def _compose(project: str, env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman-compose", "-p", project, "-f", str(REPO / "deploy" / "compose.yaml"), *args],
                          cwd=REPO / "deploy", env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"podman-compose {' '.join(args)} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


def _replica_ready(container: str) -> bool:
    """The compose healthcheck (GET /readyz inside the container) passes."""
    return podman("healthcheck", "run", container, check=False).returncode == 0


def _readyz(container: str) -> dict:
    """/readyz of one replica, read inside its container (JSON, whatever the status)."""
    import json
    code = ("import json, urllib.request, urllib.error\n"
            "try:\n    print(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=5).read().decode())\n"
            "except urllib.error.HTTPError as e:\n    print(e.read().decode())")
    return json.loads(podman("exec", container, "python3", "-c", code).stdout)


def _wait_replicas_ready(names: list[str], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all(_replica_ready(n) for n in names):
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"replicas not ready within {timeout} s: "
                         + " | ".join(podman("logs", "--tail", "20", n, check=False).stderr for n in names))


@pytest.fixture(scope="module")
def deployment(images):
    need(shutil.which("podman-compose") is not None,
         "podman-compose is not installed (scripts/test.sh installs Debian's as root)")
    photos = need_shared("data", "lfw-dev", "images")
    project = f"fgc{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {**engine_env(), "POSTGRES_PASSWORD": uuid.uuid4().hex, "FACEGATE_IMAGE": images["facegate"],
           "FACEGATE_POSTGRES_IMAGE": images["postgres"], "FACEGATE_NGINX_IMAGE": images["nginx"],
           "FACEGATE_HTTP_PORT": str(port),
           # enrolment without a consent record: the test's gallery names a legal basis (docs/compliance.md)
           "FACEGATE_CONSENT_LEGAL_BASIS": "test deployment"}
    names = {s: f"{project}_{s}_1" for s in ("postgres", "facegate-1", "facegate-2", "nginx")}
    try:
        started = time.monotonic()
        _compose(project, env, "up", "-d")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, UP_TIMEOUT_S, "the compose deployment through nginx",
                   lambda: podman("logs", "--tail", "30", names["facegate-1"], check=False).stderr)
        _wait_replicas_ready([names["facegate-1"], names["facegate-2"]], UP_TIMEOUT_S)
        print(f"\ncompose up: both replicas ready through nginx {time.monotonic() - started:.1f} s after `up -d`")
        key = create_key(names["facegate-1"])
        yield {"url": url, "names": names, "key": key, "photos": photos}
    finally:
        subprocess.run(["podman-compose", "-p", project, "-f", str(REPO / "deploy" / "compose.yaml"), "down", "-v",
                        "-t", "5"], cwd=REPO / "deploy", env=env, capture_output=True, timeout=300)


def _photo(d, person: str, n: int) -> bytes:
    return (d["photos"] / person / f"{person}_{n:04d}.jpg").read_bytes()


def test_enrol_and_verify_through_the_nginx_port(deployment):
    d = deployment
    with httpx.Client(timeout=60) as client:
        enrol(client, d["url"], d["key"], "CMP-1", _photo(d, "Aaron_Sorkin", 1))
        for _ in range(4):           # round robin: both replicas answer
            r = verify(client, d["url"], d["key"], "CMP-1", _photo(d, "Aaron_Sorkin", 2))
            assert r.status_code == 200 and r.json()["decision"] == "match", r.text
        assert client.get(d["url"] + "/metrics").status_code == 404       # not forwarded by nginx
    d["enrolled"] = True


def test_one_replica_stopped_the_other_answers(deployment):
    d = deployment
    if not d.get("enrolled"):
        pytest.skip("needs the subject enrolled by test_enrol_and_verify_through_the_nginx_port")
    podman("stop", "-t", "30", d["names"]["facegate-1"])
    try:
        with httpx.Client(timeout=60) as client:
            codes = [verify(client, d["url"], d["key"], "CMP-1", _photo(d, "Aaron_Sorkin", 2)).status_code
                     for _ in range(6)]
        assert codes == [200] * 6, codes
    finally:
        podman("start", d["names"]["facegate-1"])
    _wait_replicas_ready([d["names"]["facegate-1"]], UP_TIMEOUT_S)


def test_postgresql_restarted_both_replicas_recover(deployment):
    d = deployment
    if not d.get("enrolled"):
        pytest.skip("needs the subject enrolled by test_enrol_and_verify_through_the_nginx_port")
    replicas = [d["names"]["facegate-1"], d["names"]["facegate-2"]]
    feeds = {n: _readyz(n)["change_feed"]["reconnects"] for n in replicas}
    restart_at = time.monotonic()
    podman("restart", "-t", "10", d["names"]["postgres"])
    started = time.monotonic()
    while time.monotonic() - started < 120:   # each replica lost its change feed and connected it again
        now = {n: _readyz(n) for n in replicas}
        if all(r["ready"] and r["change_feed"]["connected"] and r["change_feed"]["reconnects"] > feeds[n]
               for n, r in now.items()):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"replicas did not recover from the PostgreSQL restart: {now}")
    print(f"\npodman restart of PostgreSQL took {started - restart_at:.1f} s; both replicas ready, change feeds "
          f"reconnected, {time.monotonic() - started:.1f} s after it returned")
    with httpx.Client(timeout=60) as client:
        for _ in range(4):
            r = verify(client, d["url"], d["key"], "CMP-1", _photo(d, "Aaron_Sorkin", 2))
            assert r.status_code == 200 and r.json()["decision"] == "match", r.text
        enrol(client, d["url"], d["key"], "CMP-2", _photo(d, "Abdullah_Gul", 1))
