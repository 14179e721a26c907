"""Property test of the upload path against a real server: whatever bytes, declared sizes,
content types or JSON structure a client sends, the answer is a 2xx or a 4xx problem+json —
never a 5xx — and the server stays up.

This fuzzes what the OpenAPI document cannot describe (image bytes, lying headers, malformed
multipart, pathological JSON: deep nesting, duplicate keys, NaN, lone surrogates). The
schema-driven fuzzing of every operation is tests/security/test_schemathesis.py."""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from conftest import need_shared
from service_support import Server, create_key, gradient_png, png_with_size


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("service-fuzz")
    srv = Server(data, max_image_bytes=1_000_000, max_request_bytes=1_500_000, max_image_pixels=4_000_000,
                 rate_limit_per_minute=1_000_000, inference_concurrency=1, inference_queue=64)
    srv.key = create_key(srv.env, "kiosk")["key"]
    srv.admin = create_key(srv.env, "admin")["key"]
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=60) as c:
        yield c


def _photo() -> bytes:
    try:
        return (need_shared("data", "lfw-dev", "images") / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    except pytest.skip.Exception:
        return gradient_png()


def jpeg_with_size(width: int, height: int) -> bytes:
    """A JPEG whose SOF0 header claims width x height (the scan data is for a tiny image)."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(out, "JPEG")
    data = bytearray(out.getvalue())
    i = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, min(height, 65535), min(width, 65535))
    return bytes(data)


PHOTO = _photo()
CONTENT_TYPES = ["image/jpeg", "image/png", "text/plain", "application/octet-stream", "application/json",
                 "multipart/form-data", "image/svg+xml", "", "x/\x7f", "image/jpeg; charset=utf-8"]

payloads = st.one_of(
    st.binary(max_size=4096),
    st.integers(min_value=0, max_value=len(PHOTO)).map(lambda n: PHOTO[:n]),                    # truncated
    st.tuples(st.integers(0, len(PHOTO) - 1), st.binary(min_size=1, max_size=64))
      .map(lambda t: PHOTO[:t[0]] + t[1] + PHOTO[t[0] + len(t[1]):]),                            # corrupted
    st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)).map(lambda t: png_with_size(*t)),
    st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(lambda t: jpeg_with_size(*t)),
    st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=64).map(lambda b: b"RIFF\x00\x00\x00\x00WEBP" + b),
    st.binary(max_size=64).map(lambda b: b"BM" + b),
    st.just(zlib.compress(b"\0" * 10_000)),
)


def assert_client_error(resp: httpx.Response) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if resp.status_code == 400 and resp.text == "Invalid HTTP request received.":
        return  # refused by uvicorn's HTTP parser (e.g. a control character in a header) before the app
    if resp.status_code >= 400:
        assert resp.headers["content-type"].startswith("application/problem+json"), resp.text[:200]
        assert "Traceback" not in resp.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=payloads, ctype=st.sampled_from(CONTENT_TYPES), route=st.sampled_from(["/v1/identify", "/v1/compare"]))
def test_multipart_uploads(client, data, ctype, route):
    files = {"image": ("x", data, ctype)} if route == "/v1/identify" else {
        "image_a": ("a", data, ctype), "image_b": ("b", data, ctype)}
    assert_client_error(client.post(route, files=files))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=payloads, as_text=st.booleans(), extra=st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=3))
def test_json_base64_uploads(client, data, as_text, extra):
    image = base64.b64encode(data).decode() if as_text else data.decode("latin-1")
    assert_client_error(client.post("/v1/identify", json={**extra, "image": image}))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=st.binary(max_size=2048), ctype=st.sampled_from(CONTENT_TYPES + [
    "multipart/form-data; boundary=x", "multipart/form-data; boundary=", "application/x-www-form-urlencoded"]))
def test_raw_bodies(client, body, ctype):
    assert_client_error(client.post("/v1/identify", content=body, headers={"Content-Type": ctype}))


json_values = st.recursive(
    # no subnormals: a library loaded in-process by other tests may set flush-to-zero, which hypothesis refuses
    st.none() | st.booleans() | st.integers() | st.floats(allow_subnormal=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=24)
FIELDS = ["subject_id", "image", "top_k", "fmr", "name", "metadata", "consent", "status", "nonce", "purpose"]
json_texts = st.one_of(
    json_values.map(json.dumps),                                                                # lone surrogates: \ud800
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(json.dumps),
    st.integers(1, 200_000).map(lambda d: "[" * d + "]" * d),                                    # deep nesting
    st.integers(1, 40_000).map(lambda d: '{"metadata": ' + '{"a": ' * d + "1" + "}" * d + "}"),
    st.lists(st.sampled_from(FIELDS), min_size=2, max_size=6)                                   # repeated keys
      .map(lambda keys: "{" + ", ".join(f'"{k}": "x"' for k in keys) + "}"),
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "1" * 5000,
                                                         "9" * 30, '"\\ud800"', '"\\u0000"', "-0.0", "1.5"]))
      .map(lambda t: '{"subject_id": "F-1", "%s": %s}' % t),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(text=json_texts, route=st.sampled_from(["/v1/identify", "/v1/subjects", "PATCH /v1/subjects/F-1",
                                               "/v1/verify", "/v1/liveness/sessions", "/v1/certifications/manual"]))
def test_json_structure(server, client, text, route):
    method, _, path = route.rpartition(" ")
    resp = client.request(method or "POST", path, content=text.encode("utf-8", "surrogatepass"),
                          headers={"Content-Type": "application/json", "X-API-Key": server.admin})
    assert_client_error(resp)


def test_server_still_up(server, client):
    assert client.get("/healthz").status_code == 200
    assert server.alive(), server.log()
    assert "Traceback" not in server.log(), server.log()
