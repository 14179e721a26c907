"""The input-handling findings of the outside security test, one test each, on a real server.

Each test sends what the tester sent and checks the answer the API owes: a 4xx problem+json
with its stable code (never a 500, never a silent "last value wins"). docs/security.md
("Request parsing") states the rules these tests hold the service to.
"""
from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from facegate.config import Settings
from facegate.storage.db import open_database
from service_support import gradient_png

from .conftest import MAX_REQUEST_BYTES, start_server

PNG = gradient_png(64, 48)
PNG_B64 = base64.b64encode(PNG).decode()
PROBLEM_STATUSES = {401, 403, 404, 409, 410, 413, 415, 422, 429, 503}


def problem(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text[:400])
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert body["code"] == code, body
    return body


def jpeg(side: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (120, 110, 100)).save(out, "JPEG")
    return out.getvalue()


def post_json(client: httpx.Client, path: str, text: str, method: str = "POST") -> httpx.Response:
    return client.request(method, path, content=text.encode(), headers={"Content-Type": "application/json"})


def subject(api, subject_id: str, **extra) -> None:
    resp = api("admin").post("/v1/subjects", json={"subject_id": subject_id, **extra})
    assert resp.status_code in (201, 409), resp.text


# ------------------------------------------------------------------ finding 6: integers beyond int64
@pytest.mark.parametrize("path,param", [("/v1/subjects", "offset"), ("/v1/audit", "after_seq"),
                                        ("/v1/certifications", "offset"), ("/v1/fraud-signals", "offset")])
def test_integer_query_parameters_are_bounded(api, server, path, param):
    for value in (2**63, 10**30, -(2**63) - 1):
        problem(api("admin").get(path, params={param: str(value)}), 422, "invalid_request")
    # the rule behind it: every integer parameter of every operation has a maximum
    spec = httpx.get(server.url + "/openapi.json").json()
    unbounded = [(p, m, prm["name"]) for p, ops in spec["paths"].items() for m, op in ops.items()
                 for prm in op.get("parameters", []) if prm["schema"].get("type") == "integer"
                 and "maximum" not in prm["schema"]]
    assert not unbounded, unbounded


@pytest.mark.parametrize("field,raw", [
    ("top_k", '"' + "9" * 30 + '"'), ("top_k", '"' + "1" * 4000 + '"'), ("top_k", "1" + "0" * 30),
    ("top_k", '"1.5"'), ("top_k", "1.5"), ("top_k", "5.0"), ("top_k", '"1e3"'), ("top_k", '"0x10"'),
    ("top_k", '"\uff15"'), ("top_k", "true"), ("top_k", '"NaN"'), ("top_k", "NaN"), ("top_k", "Infinity"),
    ("top_k", "-Infinity"), ("top_k", "[5]"),
    ("fmr", "1" + "0" * 400), ("fmr", '"1e999"'), ("fmr", '"nan"'), ("fmr", "NaN"), ("fmr", "Infinity"),
    ("fmr", '"' + "0." + "0" * 3000 + "1" + '"'),
])
def test_number_fields_refuse_absurd_values(api, field, raw):
    text = '{"image": "%s", "%s": %s}' % (PNG_B64, field, raw)
    problem(post_json(api("kiosk"), "/v1/identify", text), 422, "invalid_request")


def test_number_fields_refuse_absurd_values_in_forms(api):
    for value in ("9" * 30, "1.5", "inf", "NaN", "1e400"):
        resp = api("kiosk").post("/v1/identify", files={"image": ("p.png", PNG, "image/png")}, data={"top_k": value})
        problem(resp, 422, "invalid_request")


# ------------------------------------------------------------------ finding 7: deeply nested JSON
IMAGE_ROUTES = ["/v1/verify", "/v1/identify", "/v1/compare", "/v1/kiosk/authenticate", "/v1/certifications",
                "/v1/certifications/manual", "/v1/subjects/NEST-1/faces", "/v1/liveness/sessions"]


@pytest.mark.parametrize("route", IMAGE_ROUTES + ["/v1/subjects", "PATCH /v1/subjects/NEST-1"])
def test_deeply_nested_json_is_422(api, route, server):
    subject(api, "NEST-1")
    method, _, path = route.rpartition(" ")
    deep, objects = 100_000, 30_000      # 200 kB and 210 kB: under every body cap
    for text in ('{"image": ' + "[" * deep + "]" * deep + "}", "[" * deep + "]" * deep,
                 '{"subject_id": "NEST-2", "metadata": ' + '{"a": ' * objects + "1" + "}" * objects + "}",
                 '{"image": ' + "[" * 40 + "]" * 40 + "}"):
        problem(post_json(api("admin"), path, text, method or "POST"), 422, "invalid_request")
    assert "Traceback" not in server.log()


# ------------------------------------------------------------------ duplicate keys, repeated fields
def test_duplicate_json_keys_and_repeated_fields_are_refused(api):
    subject(api, "DUP-0")
    admin, kiosk = api("admin"), api("kiosk")
    # JSON: at the top and nested, on a model route and an image route
    body = problem(post_json(admin, "/v1/subjects", '{"subject_id": "DUP-1", "subject_id": "DUP-2"}'),
                   422, "invalid_request")
    assert "subject_id" in body["detail"]
    problem(post_json(admin, "/v1/subjects", '{"subject_id": "DUP-3", "metadata": {"a": 1, "a": 2}}'),
            422, "invalid_request")
    problem(post_json(admin, "/v1/subjects/DUP-0", '{"name": "A", "name": "B"}', "PATCH"), 422, "invalid_request")
    problem(post_json(kiosk, "/v1/verify", '{"subject_id": "DUP-0", "subject_id": "X", "image": "%s"}' % PNG_B64),
            422, "invalid_request")
    assert admin.get("/v1/subjects/DUP-1").status_code == 404
    # multipart: a single-valued text field or file sent twice
    problem(kiosk.post("/v1/verify", files=[("image", ("a.png", PNG, "image/png"))],
                       data={"subject_id": ["DUP-0", "DUP-X"]}), 422, "invalid_request")
    problem(kiosk.post("/v1/identify", files=[("image", ("a.png", PNG, "image/png")),
                                              ("image", ("b.png", PNG, "image/png"))]), 422, "invalid_request")
    problem(kiosk.post("/v1/identify", files=[("image", ("a.png", PNG, "image/png"))], data={"image": PNG_B64}),
            422, "invalid_request")
    # urlencoded
    problem(kiosk.post("/v1/liveness/sessions", content=b"purpose=a&purpose=b",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}), 422, "invalid_request")
    # liveness frames legitimately repeat; their nonce does not
    session = kiosk.post("/v1/liveness/sessions", json={}).json()
    frames = [("frames", (f"{i}.jpg", jpeg(), "image/jpeg")) for i in range(2)]
    ok = kiosk.post(f"/v1/liveness/sessions/{session['session_id']}/frames", files=frames,
                    data={"nonce": session["nonce"], "timestamps": "0,0.1"})
    assert ok.status_code == 200 and ok.json()["frames_received"] == 2, ok.text
    problem(kiosk.post(f"/v1/liveness/sessions/{session['session_id']}/frames", files=frames,
                       data={"nonce": [session["nonce"], session["nonce"]], "timestamps": "0.2,0.3"}),
            422, "invalid_request")


# ------------------------------------------------------------------ metadata bounds
def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_metadata_and_consent_are_bounded(api):
    admin = api("admin")
    big = {"notes": "x" * (16 * 1024)}
    problem(admin.post("/v1/subjects", json={"subject_id": "META-1", "metadata": big}), 422, "invalid_request")
    problem(admin.post("/v1/subjects", json={"subject_id": "META-1", "consent": big}), 422, "invalid_request")
    problem(admin.post("/v1/subjects", json={"subject_id": "META-1", "metadata": nested(9)}), 422, "invalid_request")
    problem(post_json(admin, "/v1/subjects", '{"subject_id": "META-1", "metadata": {"x": NaN}}'),
            422, "invalid_request")
    # the tester's 20 MB (scaled to this server's body limit): over the model routes' body cap
    huge = {"subject_id": "META-1", "metadata": {"blob": "y" * (MAX_REQUEST_BYTES - 1000)}}
    problem(admin.post("/v1/subjects", json=huge), 413, "image_too_large")
    ok = admin.post("/v1/subjects", json={"subject_id": "META-1", "metadata": nested(8),
                                          "consent": {"by": "x" * 15_000}})
    assert ok.status_code == 201, ok.text
    problem(admin.patch("/v1/subjects/META-1", json={"metadata": big}), 422, "invalid_request")
    problem(admin.patch("/v1/subjects/META-1", json={"metadata": nested(9)}), 422, "invalid_request")
    assert admin.get("/v1/subjects/META-1").json()["metadata"] == nested(8)


# ------------------------------------------------------------------ control and bidi characters
@pytest.mark.parametrize("bad", ["a\x00b", "Ann\u202eenna", "\u2066x\u2069", "bell\x07", "line\nbreak", "\x85",
                                 "\u202a", "\u202d"])
def test_control_and_bidi_characters_are_refused(api, bad):
    admin = api("admin")
    subject(api, "TEXT-1")
    problem(admin.post("/v1/subjects", json={"subject_id": "TEXT-2", "name": bad}), 422, "invalid_request")
    problem(admin.patch("/v1/subjects/TEXT-1", json={"name": bad}), 422, "invalid_request")
    problem(admin.post("/v1/subjects/TEXT-1/faces", json={"image": PNG_B64, "source": bad}), 422, "invalid_request")
    problem(admin.post("/v1/certifications/manual", json={"subject_id": "TEXT-1", "outcome": "failed",
                                                         "note": bad.replace("\n", "\x00")}), 422, "invalid_request")
    problem(admin.get("/v1/subjects", params={"prefix": bad}), 422, "invalid_request")
    problem(admin.get("/v1/subjects/" + quote(bad, safe="")), 422, "invalid_request")
    assert admin.get("/v1/subjects/TEXT-1").json()["name"] is None


def test_multiline_note_and_plain_names_still_pass(api):
    admin = api("admin")
    ok = admin.post("/v1/subjects", json={"subject_id": "TEXT-3", "name": "Zoë Ñúñez-O'Brien \u05e9\u05dc\u05d5\u05dd"})
    assert ok.status_code == 201, ok.text
    ok = admin.post("/v1/certifications/manual", json={"subject_id": "TEXT-3", "outcome": "failed",
                                                      "note": "seen at the desk\nno document"})
    assert ok.status_code == 201, ok.text


# ------------------------------------------------------------------ prefix is not a LIKE pattern
def test_prefix_is_literal(api):
    for sid in ("PFX_A", "PFXZA", "PFX.B"):
        subject(api, sid)
    admin = api("admin")
    assert admin.get("/v1/subjects", params={"prefix": "%"}).json()["total"] == 0
    assert [s["subject_id"] for s in admin.get("/v1/subjects", params={"prefix": "PFX_"}).json()["subjects"]] == ["PFX_A"]
    assert admin.get("/v1/subjects", params={"prefix": "PFX"}).json()["total"] == 3


# ------------------------------------------------------------------ uploads never rest on disk
def open_temp_files(pid: int, tmp: Path, existing: set[Path]) -> list[str]:
    """Files under ``tmp`` the process holds open (unlinked O_TMPFILE files included), and
    files there that are not in ``existing``."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(tmp)):
            found.append(target)
    return found + [str(p) for p in tmp.rglob("*") if p not in existing]


def test_multipart_uploads_never_touch_disk(api, server):
    """A 2.5 MB image part (over Starlette's default 1 MB spool) is held in memory: while the
    upload is paused half-way through the part, the server holds no file in its TMPDIR."""
    boundary = "fgboundary"
    size = 2_500_000
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    seen: list[str] = []
    existing = set(server.tmp.rglob("*"))   # what other libraries left there before the upload

    def body():
        yield head
        sent = 0
        while sent < size:
            chunk = b"\xff" * 64 * 1024
            yield chunk
            sent += len(chunk)
            if sent >= 1_600_000 and not seen:
                time.sleep(0.8)          # the server has parsed 1.6 MB of the part by now
                seen.append("checked")
                seen.extend(open_temp_files(server.proc.pid, server.tmp, existing))
        yield tail

    resp = api("kiosk").post("/v1/identify", content=body(),
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert resp.status_code in (413, 415, 422), resp.text
    assert seen == ["checked"], seen
    assert set(server.tmp.rglob("*")) == existing


# ------------------------------------------------------------------ wrong codes
def chunked(total: int, piece: int = 64 * 1024):
    def gen():
        yield b'{"subject_id": "CHUNK-1", "name": "'
        sent = 0
        while sent < total:
            yield b"a" * piece
            sent += piece
        yield b'"}'
    return gen()


def test_chunked_oversized_json_is_413(api):
    admin = api("admin")
    # a model route (its body cap) and an image route (FACEGATE_MAX_REQUEST_BYTES), no Content-Length
    problem(admin.post("/v1/subjects", content=chunked(300 * 1024), headers={"Content-Type": "application/json"}),
            413, "image_too_large")
    problem(admin.post("/v1/verify", content=chunked(MAX_REQUEST_BYTES + 16 * 1024),
                       headers={"Content-Type": "application/json"}), 413, "image_too_large")
    assert admin.get("/v1/subjects/CHUNK-1").status_code == 404


def test_no_credentials_is_401_before_the_body(api):
    anonymous = api(None)
    for method, path in (("POST", "/v1/subjects"), ("PATCH", "/v1/subjects/X"), ("POST", "/v1/verify"),
                         ("POST", "/v1/liveness/sessions/abc/frames")):
        for ctype, body in (("application/json", b"{"), ("multipart/form-data; boundary=x", b"--x\r\n garbage"),
                            ("application/json", b"[" * 100_000)):
            resp = anonymous.request(method, path, content=body, headers={"Content-Type": ctype})
            problem(resp, 401, "unauthorized")
            assert resp.headers["www-authenticate"].startswith("ApiKey")
    # a capture token goes on to the route, where the full check answers
    problem(anonymous.post("/v1/subjects", content=b"{}", headers={"Authorization": "Bearer fgc_x.y",
                                                                   "Content-Type": "application/json"}),
            401, "unauthorized")
    assert anonymous.get("/healthz").status_code == 200
    # refused before any route, and audited like a wrong key
    entries = api("admin").get("/v1/audit", params={"operation": "auth.refused", "limit": 1000}).json()["entries"]
    assert any(e["actor"] == "anonymous" and e["outcome"] == "unauthorized" and e["detail"]["route"] == "/v1/subjects"
               for e in entries), entries[-5:]


def test_empty_image_is_invalid_request_either_way(api):
    kiosk = api("kiosk")
    for resp in (kiosk.post("/v1/identify", files={"image": ("e.png", b"", "image/png")}),
                 kiosk.post("/v1/identify", json={"image": "data:image/png;base64,"}),
                 kiosk.post("/v1/identify", json={"image": "   "}),
                 kiosk.post("/v1/compare", files={"image_a": ("a.png", PNG, "image/png"),
                                                  "image_b": ("b.png", b"", "image/png")})):
        body = problem(resp, 422, "invalid_request")
        assert "is empty" in body["detail"], body


# ------------------------------------------------------------------ the OpenAPI document, 405, /docs
def test_openapi_declares_every_problem_answer(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "Problem" in spec["components"]["schemas"]
    ops = [(p, m, op) for p, ops in spec["paths"].items() if p.startswith("/v1/") for m, op in ops.items()]
    assert len(ops) >= 20
    for path, method, op in ops:
        declared = {int(s) for s in op["responses"] if s.isdigit() and int(s) >= 400}
        assert declared >= PROBLEM_STATUSES, (method, path, sorted(declared))
        for status in PROBLEM_STATUSES:
            content = op["responses"][str(status)]["content"]
            assert list(content) == ["application/problem+json"], (method, path, status, content)
            assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    enrol = spec["paths"]["/v1/subjects/{subject_id}/faces"]["post"]["requestBody"]["content"]
    assert enrol["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_405_names_the_allowed_methods(api):
    resp = api("admin").put("/v1/subjects", json={})
    problem(resp, 405, "method_not_allowed")
    assert {m.strip() for m in resp.headers["allow"].split(",")} >= {"GET", "POST"}
    resp = api("admin").delete("/v1/verify")
    problem(resp, 405, "method_not_allowed")
    assert [m.strip() for m in resp.headers["allow"].split(",")] == ["POST"]


def test_api_docs_are_off_by_default(server):
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        problem(httpx.get(server.url + path), 404, "not_found")
    assert httpx.get(server.url + "/openapi.json").status_code == 200


def test_api_docs_setting_turns_them_on(tmp_path):
    srv = start_server(tmp_path, api_docs="true")
    try:
        resp = httpx.get(srv.url + "/docs")
        assert resp.status_code == 200 and "swagger" in resp.text.lower()
    finally:
        srv.stop()


# ------------------------------------------------------------------ SQLite durability
def test_sqlite_commits_are_synchronous_full(server):
    db = open_database(Settings.load(data_dir=str(server.data)).database)
    try:
        with db.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2   # FULL
    finally:
        db.dispose()
