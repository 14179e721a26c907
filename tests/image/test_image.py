"""The image as an operator runs it: one container with a read-only root and a data volume.

Built by scripts/build-image.sh (the session fixture ``images``); started with podman on a free
loopback port. Checks /readyz and the image's HEALTHCHECK, a key made through ``podman exec``,
enrolment and /v1/verify over HTTP, the capture page, a request in flight finishing through SIGTERM,
a restart that keeps the data, the non-root user, and what the runtime image must not contain.
"""
from __future__ import annotations

import time
import uuid

import httpx
import pytest

from conftest import need_shared
from service_support import free_port

from .support import create_key, enrol, podman, verify, wait_ready

pytestmark = pytest.mark.slow

MIN_READY_S = 120


@pytest.fixture(scope="module")
def container(images):
    photos = need_shared("data", "lfw-dev", "images")
    name = f"facegate-test-{uuid.uuid4().hex[:8]}"
    volume = name + "-data"
    port = free_port()
    podman("volume", "create", volume)
    try:
        podman("run", "-d", "--name", name, "--read-only", "-v", f"{volume}:/var/lib/facegate",
               "-e", "FACEGATE_INTRA_OP_THREADS=1", "-e", "FACEGATE_CONSENT_LEGAL_BASIS=test container",
               "-p", f"127.0.0.1:{port}:8000", images["facegate"])
        url = f"http://127.0.0.1:{port}"
        ready_s = wait_ready(url, MIN_READY_S, "the container", lambda: podman("logs", name, check=False).stderr[-3000:])
        print(f"\ncontainer ready {ready_s:.1f} s after podman run")
        yield {"name": name, "url": url, "photos": photos, "image": images["facegate"]}
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)


def _photo(c, person: str, n: int) -> bytes:
    return (c["photos"] / person / f"{person}_{n:04d}.jpg").read_bytes()


def test_readyz_answers_200_and_the_image_healthcheck_passes(container):
    r = httpx.get(container["url"] + "/readyz", timeout=10)
    assert r.status_code == 200 and r.json()["ready"] is True, r.text
    assert podman("healthcheck", "run", container["name"], check=False).returncode == 0
    assert podman("inspect", "--format", "{{.State.Health.Status}}", container["name"]).stdout.strip() == "healthy"


def test_the_process_is_not_root_and_the_root_filesystem_is_read_only(container):
    name = container["name"]
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    assert podman("exec", name, "cat", "/proc/1/status").stdout.count("\nUid:\t10001\t10001\t10001\t10001") == 1
    assert podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip() == "true"
    refused = podman("exec", name, "touch", "/opt/venv/written", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    assert podman("exec", name, "touch", "/var/lib/facegate/written", check=False).returncode == 0


def test_the_runtime_image_has_no_node_no_compiler_and_a_checked_model_pack(container):
    found = podman("run", "--rm", "--entrypoint", "sh", container["image"], "-c",
                   "for t in node nodejs npm gcc cc c++ g++ clang make; do command -v $t; done; true").stdout
    assert found.strip() == "", f"found in the runtime image: {found}"
    packs = podman("run", "--rm", container["image"], "facegate", "models", "list").stdout
    assert "default" in packs and "fr_feature" in packs, packs


def test_a_key_made_through_podman_exec_enrols_and_verifies_over_http_and_the_capture_page_is_served(container):
    url = container["url"]
    key = create_key(container["name"])
    container["key"] = key
    with httpx.Client(timeout=60) as client:
        enrol(client, url, key, "IMG-1", _photo(container, "Aaron_Sorkin", 1))
        same = verify(client, url, key, "IMG-1", _photo(container, "Aaron_Sorkin", 2))
        assert same.status_code == 200 and same.json()["decision"] == "match", same.text
        other = verify(client, url, key, "IMG-1", _photo(container, "Abdullah_Gul", 1))
        assert other.status_code == 200 and other.json()["decision"] == "no_match", other.text
        page = client.get(url + "/capture/")
        assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:300]


def test_sigterm_lets_the_request_in_flight_finish_and_a_restart_keeps_the_data(container):
    if "key" not in container:
        pytest.skip("needs the subject enrolled by the enrol and verify test")
    name, url, key = container["name"], container["url"], container["key"]
    request = httpx.Request("POST", url + "/v1/verify", data={"subject_id": "IMG-1"},
                            files={"image": ("p.jpg", _photo(container, "Aaron_Sorkin", 2), "image/jpeg")})
    body = request.read()
    chunks = [body[i:i + 2048] for i in range(0, len(body), 2048)]
    signalled = []

    def slowly():                       # a slow upload: in flight for ~2 s, SIGTERM after its first chunk
        for i, chunk in enumerate(chunks):
            if i == 1:
                signalled.append(podman("kill", "--signal", "SIGTERM", name).returncode)
            yield chunk
            time.sleep(2.0 / len(chunks))

    r = httpx.post(url + "/v1/verify", content=slowly(), timeout=60,
                   headers={"X-API-Key": key, "Content-Type": request.headers["content-type"],
                            "Content-Length": str(len(body))})
    assert signalled == [0]
    assert r.status_code == 200 and r.json()["decision"] == "match", r.text
    exit_code = podman("wait", name, timeout=60).stdout.strip()
    logs = podman("logs", name).stderr
    assert exit_code in ("0", "143"), f"exit code {exit_code} after SIGTERM: {logs[-2000:]}"
    assert "Finished server process" in logs, logs[-2000:]

    podman("start", name)
    wait_ready(url, MIN_READY_S, "the restarted container", lambda: podman("logs", name, check=False).stderr[-3000:])
    with httpx.Client(timeout=60) as client:
        subject = client.get(url + "/v1/subjects/IMG-1", headers={"X-API-Key": key})
        assert subject.status_code == 200 and len(subject.json()["faces"]) == 1, subject.text
        again = verify(client, url, key, "IMG-1", _photo(container, "Aaron_Sorkin", 2))
        assert again.status_code == 200 and again.json()["decision"] == "match", again.text
