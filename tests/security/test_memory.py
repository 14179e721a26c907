"""What a hostile upload can make a real server hold: images and liveness captures are bounded
before decoding, decoded reduced where the format allows, and captures keep only reduced frames.

Memory is read from the server's own /proc status: VmHWM is its peak resident size so far, so
the growth of the peak across an upload is what the upload cost at worst."""
from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service_support import Server, create_key

MB = 1024 * 1024


def sparse_png(width: int, height: int, bits: int = 8) -> bytes:
    """A tiny file that decodes to a huge image: all black but one pixel."""
    arr = np.zeros((height, width), dtype=np.uint16 if bits == 16 else np.uint8)
    arr[0, 0] = 65535 if bits == 16 else 255
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG", optimize=True)
    return out.getvalue()


def peak_rss(srv) -> int:
    status = Path(f"/proc/{srv.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("memory"), rate_limit_per_minute=100_000, inference_concurrency=1).start()
    srv.key = create_key(srv.env, "kiosk")["key"]
    yield srv
    srv.stop()


def call(srv, method, path, **kw):
    return httpx.request(method, srv.url + path, headers={"X-API-Key": srv.key}, timeout=120, **kw)


def test_a_huge_sparse_png_is_refused_before_it_is_decoded(server):
    before = peak_rss(server)
    bomb = sparse_png(6300, 6300, bits=16)            # ~40 Mpx in a few kB
    assert len(bomb) < 200_000
    r = call(server, "POST", "/v1/compare", files={"image_a": ("a.png", bomb), "image_b": ("b.png", bomb)})
    assert r.status_code == 413 and r.json()["code"] == "image_too_large", r.text
    assert peak_rss(server) - before < 50 * MB


def test_a_16_bit_image_under_the_cap_costs_what_an_8_bit_one_costs(server):
    """24.5 Mpx, just under the 25 Mpx cap: the first uploads pay for the pipeline's buffers at
    that size (the allocators settle after a few); then a 16-bit one must not add its own copies
    (a float64 copy alone was 196 MB, and the decoder's 32-bit image another 98 MB)."""
    for bits in (8, 16, 8, 16):
        before = peak_rss(server)
        image = sparse_png(5000, 4900, bits=bits)
        r = call(server, "POST", "/v1/compare", files={"image_a": ("a.png", image), "image_b": ("b.png", image)})
        assert r.status_code == 422 and r.json()["code"] == "no_face", r.text
    assert peak_rss(server) - before < 40 * MB


def test_a_liveness_capture_of_huge_sparse_frames_stays_small(server):
    """The finding: 0.6 MB of sparse 6300x6300 PNG frames raised the server from 255 MB to 2.25 GB."""
    s = call(server, "POST", "/v1/liveness/sessions").json()
    bomb = sparse_png(6300, 6300)
    frames = [("frames", (f"{i}.png", bomb, "image/png")) for i in range(20)]
    before = peak_rss(server)
    r = call(server, "POST", f"/v1/liveness/sessions/{s['session_id']}/frames", files=frames,
             data={"nonce": s["nonce"], "timestamps": ",".join(f"{i / 20:.2f}" for i in range(20))})
    assert r.status_code == 413 and r.json()["code"] == "image_too_large", r.text
    # frames within the frame pixel cap are reduced on arrival: 60 of them cost what 640 px frames cost
    allowed = sparse_png(2000, 2000)
    frames = [("frames", (f"{i}.png", allowed, "image/png")) for i in range(60)]
    r = call(server, "POST", f"/v1/liveness/sessions/{s['session_id']}/frames", files=frames,
             data={"nonce": s["nonce"], "timestamps": ",".join(f"{i / 20:.2f}" for i in range(60))})
    assert r.status_code == 200 and r.json()["frames_received"] == 60, r.text
    r = call(server, "POST", f"/v1/liveness/sessions/{s['session_id']}/complete", json={"nonce": s["nonce"]})
    assert r.status_code == 200 and not r.json()["live"]
    assert peak_rss(server) - before < 100 * MB
