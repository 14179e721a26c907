"""End-to-end tests of the HTTP service against a real ``facegate serve`` on loopback.

One server (real models, temporary data directory) serves the whole module; keys come from the
real CLI. Covers enrolment, genuine and impostor verification, identification, compare (with an
ID-card chip sized photo), each role's allowed and refused calls, every error code, metrics,
and the audit chain (``facegate audit verify`` after a row is tampered with).
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import sqlite3

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import need_shared
from facegate.config import Settings
from facegate.storage.db import open_database
from facegate.storage import apikeys
from service_support import (REPO, Server, blurred, chip_photo, cli, create_key, encode, gradient_png,
                             png_with_size, shrunk, side_by_side)

PEOPLE = ("Colin_Powell", "Andre_Agassi", "Abdullah_Gul", "Amelia_Vega", "Ann_Veneman")


def photo(name: str, n: int) -> bytes:
    return (need_shared("data", "lfw-dev", "images") / name / f"{name}_{n:04d}.jpg").read_bytes()


def subject_id(name: str) -> str:
    return "P-" + name.replace("_", "-").upper()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_shared("data", "lfw-dev", "images")
    data = tmp_path_factory.mktemp("service-data")
    srv = Server(data, inference_concurrency=1, inference_queue=1, max_image_bytes=2_000_000,
                 max_request_bytes=3_000_000, max_image_pixels=20_000_000, rate_limit_per_minute=100_000)
    # the CLI for two keys and a revocation; the others straight through the same function
    srv.keys = {"admin": create_key(srv.env, "admin", "--name", "test admin", "--client-id", "admin-01"),
                "revoked": create_key(srv.env, "kiosk")}
    cli(srv.env, "keys", "revoke", srv.keys["revoked"]["key_id"])
    db = open_database(Settings.load(data_dir=str(data)).database)
    for name, role, limit in (("operator", "operator", None), ("kiosk", "kiosk", None), ("app", "app", None),
                              ("limited", "app", 3)):
        secret, key = apikeys.create_key(db, role, name=f"test {name}", client_id=f"{name}-01",
                                         rate_limit_per_minute=limit)
        srv.keys[name] = {"key": secret, "key_id": key.key_id}
    db.dispose()
    srv.start()
    yield srv
    srv.stop()


def call(server, role: str | None, method: str, path: str, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if role is not None:
        headers["X-API-Key"] = server.keys[role]["key"] if role in server.keys else role
    return httpx.request(method, server.url + path, headers=headers, timeout=60, **kw)


def problem(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["code"] == code and body["status"] == status, body
    assert "Traceback" not in resp.text
    return body


@pytest.fixture(scope="module")
def enrolled(server):
    for name in PEOPLE:
        r = call(server, "operator", "POST", "/v1/subjects",
                 json={"subject_id": subject_id(name), "name": name.replace("_", " "),
                       "consent": {"by": name, "purpose": "pension certification"}})
        assert r.status_code == 201, r.text
        r = call(server, "operator", "POST", f"/v1/subjects/{subject_id(name)}/faces",
                 files={"image": (f"{name}.jpg", photo(name, 1), "image/jpeg")})
        assert r.status_code == 201, r.text
        assert r.json()["face_id"] >= 1
    return server


# ------------------------------------------------------------------ operations
def test_health_ready_docs_metrics(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert httpx.get(server.url + "/openapi.json").json()["paths"]["/v1/verify"]["post"]
    assert httpx.get(server.url + "/docs").status_code == 404          # FACEGATE_API_DOCS=1 turns it on (CDN script)


# ------------------------------------------------------------------ matching
def test_enrol_and_read_subject(enrolled):
    r = call(enrolled, "operator", "GET", f"/v1/subjects/{subject_id('Colin_Powell')}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "Colin Powell" and body["status"] == "active" and len(body["faces"]) == 1
    assert "embedding" not in r.text and "embedding_enc" not in r.text


def test_list_subjects(enrolled):
    r = call(enrolled, "operator", "GET", "/v1/subjects", params={"prefix": "P-A", "limit": 10})
    assert r.status_code == 200, r.text
    listed = {s["subject_id"]: s for s in r.json()["subjects"]}
    assert subject_id("Andre_Agassi") in listed and subject_id("Colin_Powell") not in listed
    assert listed[subject_id("Andre_Agassi")]["n_faces"] == 1
    problem(call(enrolled, "kiosk", "GET", "/v1/subjects"), 403, "forbidden")


def test_verify_genuine_multipart_and_base64(enrolled):
    sid = subject_id("Colin_Powell")
    r = call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": sid},
             files={"image": ("probe.jpg", photo("Colin_Powell", 2), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["match"] is True and body["decision"] == "match"
    assert body["score"] >= body["threshold"] and body["fmr"] <= 1e-3
    assert body["decision_id"].startswith("d_") and body["quality"]["score"] > 0.3
    b64 = base64.b64encode(photo("Colin_Powell", 2)).decode()
    r2 = call(enrolled, "admin", "POST", "/v1/verify", json={"subject_id": sid, "image": b64})
    assert r2.status_code == 200, r2.text
    assert r2.json()["score"] == pytest.approx(body["score"], abs=1e-5)
    r3 = call(enrolled, "admin", "POST", "/v1/verify",
              json={"subject_id": sid, "image": "data:image/jpeg;base64," + b64})
    assert r3.status_code == 200 and r3.json()["match"] is True


def test_verify_impostor(enrolled):
    r = call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": subject_id("Colin_Powell")},
             files={"image": ("probe.jpg", photo("Andre_Agassi", 2), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["match"] is False and body["decision"] == "no_match"
    assert body["score"] < body["threshold"] - body["review_band"]


def test_verify_low_quality_goes_to_manual_review(enrolled):
    """A blurred genuine probe: the face matches, but its quality (0.2-0.35) does not allow an
    automatic yes."""
    r = call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": subject_id("Colin_Powell")},
             files={"image": ("probe.jpg", blurred(photo("Colin_Powell", 2), 2.5), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0.2 <= body["quality"]["score"] < 0.35 and body["score"] >= body["threshold"]
    assert body["decision"] == "manual_review" and body["review_reasons"] == ["low_quality"]
    assert body["match"] is False


def test_identify(enrolled):
    r = call(enrolled, "kiosk", "POST", "/v1/identify", data={"top_k": "3"},
             files={"image": ("probe.jpg", photo("Abdullah_Gul", 2), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["subject_id"] for c in body["candidates"]][:1] == [subject_id("Abdullah_Gul")]
    assert all(c["score"] >= body["threshold"] for c in body["candidates"])
    # somebody never enrolled: nobody is above the threshold
    r = call(enrolled, "kiosk", "POST", "/v1/identify",
             json={"image": base64.b64encode(photo("Ari_Fleischer", 2)).decode()})
    assert r.status_code == 200, r.text
    assert r.json()["candidates"] == []


def test_compare_person_vs_chip_photo(server):
    live = photo("Amelia_Vega", 2)
    r = call(server, "kiosk", "POST", "/v1/compare",
             files={"image_a": ("live.jpg", live, "image/jpeg"),
                    "image_b": ("chip.jpg", chip_photo(photo("Amelia_Vega", 1)), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["score"] >= body["threshold"] and body["decision"] in ("match", "manual_review")
    assert body["quality_b"]["face_size"] < 80
    r = call(server, "kiosk", "POST", "/v1/compare",
             files={"image_a": ("live.jpg", live, "image/jpeg"),
                    "image_b": ("chip.jpg", chip_photo(photo("Ann_Veneman", 1)), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json()["match"] is False and r.json()["decision"] == "no_match"


def test_update_delete_face_and_erase(server):
    sid = "P-ERASE-ME"
    assert call(server, "operator", "POST", "/v1/subjects", json={"subject_id": sid, "name": "x"}).status_code == 201
    r = call(server, "operator", "PATCH", f"/v1/subjects/{sid}", json={"status": "suspended", "name": "Y"})
    assert r.status_code == 200 and r.json()["status"] == "suspended" and r.json()["name"] == "Y"
    r = call(server, "operator", "POST", f"/v1/subjects/{sid}/faces",
             files={"image": ("a.jpg", photo("Ari_Fleischer", 1), "image/jpeg")})
    assert r.status_code == 201, r.text
    face_id = r.json()["face_id"]
    # a suspended subject's face is never an automatic match
    r = call(server, "kiosk", "POST", "/v1/verify", data={"subject_id": sid},
             files={"image": ("p.jpg", photo("Ari_Fleischer", 2), "image/jpeg")})
    assert r.status_code == 200 and r.json()["decision"] == "manual_review", r.text
    assert "subject_suspended" in r.json()["review_reasons"]
    assert call(server, "operator", "DELETE", f"/v1/subjects/{sid}/faces/{face_id}").status_code == 204
    problem(call(server, "operator", "DELETE", f"/v1/subjects/{sid}/faces/{face_id}"), 404, "unknown_face")
    problem(call(server, "operator", "DELETE", f"/v1/subjects/{sid}"), 403, "forbidden")
    assert call(server, "admin", "DELETE", f"/v1/subjects/{sid}").status_code == 204
    problem(call(server, "admin", "GET", f"/v1/subjects/{sid}"), 404, "unknown_subject")


# ------------------------------------------------------------------ roles
ROLE_CASES = [
    # (role, method, path, allowed)
    ("operator", "GET", "/v1/subjects/{sid}", True),
    ("kiosk", "GET", "/v1/subjects/{sid}", False),
    ("app", "PATCH", "/v1/subjects/{sid}", False),
    ("operator", "PATCH", "/v1/subjects/{sid}", True),
    ("kiosk", "POST", "/v1/subjects/{sid}/faces", False),
    ("app", "POST", "/v1/subjects", False),
    ("operator", "POST", "/v1/verify", False),
    ("operator", "POST", "/v1/identify", False),
    ("app", "POST", "/v1/identify", False),       # a device credential never searches the gallery
    ("operator", "POST", "/v1/compare", False),
    ("operator", "GET", "/v1/audit", False),
    ("kiosk", "GET", "/v1/audit", False),
    ("app", "GET", "/v1/audit", False),
    ("admin", "GET", "/v1/audit", True),
    ("admin", "GET", "/v1/subjects/{sid}", True),
    ("kiosk", "DELETE", "/v1/subjects/{sid}", False),
    ("app", "DELETE", "/v1/subjects/{sid}/faces/1", False),
]


@pytest.mark.parametrize("role,method,path,allowed", ROLE_CASES)
def test_roles(enrolled, role, method, path, allowed):
    path = path.format(sid=subject_id("Ann_Veneman"))
    kw = {"json": {"name": "Ann Veneman"}} if method == "PATCH" else {}
    if method == "POST" and path == "/v1/subjects":
        kw = {"json": {"subject_id": "P-NEW"}}
    r = call(enrolled, role, method, path, **kw)
    if allowed:
        assert r.status_code == 200, r.text
    else:
        problem(r, 403, "forbidden")


def test_matching_roles_allowed(enrolled):
    for role in ("kiosk", "admin"):
        r = call(enrolled, role, "POST", "/v1/verify", data={"subject_id": subject_id("Ann_Veneman")},
                 files={"image": ("p.jpg", photo("Ann_Veneman", 2), "image/jpeg")})
        assert r.status_code == 200 and r.json()["match"] is True, (role, r.text)
    # the app verifies only the subject of a liveness session it opened for them
    r = call(enrolled, "app", "POST", "/v1/verify", data={"subject_id": subject_id("Ann_Veneman")},
             files={"image": ("p.jpg", photo("Ann_Veneman", 2), "image/jpeg")})
    problem(r, 403, "forbidden")


# ------------------------------------------------------------------ error codes
def test_unauthorized(server):
    problem(call(server, None, "POST", "/v1/verify", json={}), 401, "unauthorized")
    problem(call(server, "fg_k_000000000000.nonsense", "POST", "/v1/verify", json={}), 401, "unauthorized")
    problem(call(server, "revoked", "POST", "/v1/verify", json={}), 401, "unauthorized")
    problem(call(server, None, "GET", "/v1/audit"), 401, "unauthorized")


def test_image_errors(enrolled):
    sid = subject_id("Colin_Powell")
    cases = [
        (gradient_png(), 422, "no_face"),
        (side_by_side(photo("Colin_Powell", 2), photo("Andre_Agassi", 1)), 422, "multiple_faces"),
        (shrunk(photo("Colin_Powell", 2)), 422, "face_too_small"),
        (blurred(photo("Colin_Powell", 2), 5), 422, "low_quality"),
        (b"this is not an image at all", 415, "unsupported_image"),
        (photo("Colin_Powell", 2)[:600], 415, "unsupported_image"),
        (png_with_size(30000, 30000), 413, "image_too_large"),
    ]
    for data, status, code in cases:
        r = call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": sid},
                 files={"image": ("x.jpg", data, "image/jpeg")})
        problem(r, status, code)


def _levels(photo_bytes: bytes, gain: float, offset: float = 0) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(photo_bytes)).convert("RGB"), dtype=np.float64)
    return encode(Image.fromarray(np.clip(pixels * gain + offset, 0, 255).astype(np.uint8)))


def test_refusals_carry_their_cause(enrolled):
    """A refused photo's problem says why in a stable ``cause`` the capture page puts in words."""
    sid = subject_id("Colin_Powell")
    genuine = photo("Colin_Powell", 2)
    cases = [
        (side_by_side(genuine, photo("Andre_Agassi", 1)), "multiple_faces", "second_face"),
        (shrunk(genuine), "face_too_small", "too_far"),
        (blurred(genuine, 5), "low_quality", "blurred"),
        (_levels(genuine, 0.15), "low_quality", "too_dark"),          # centre brightness ~20
        (_levels(genuine, 1.0, 170), "low_quality", "too_bright"),    # ~250, nearly white
    ]
    for data, code, cause in cases:
        r = call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": sid},
                 files={"image": ("x.jpg", data, "image/jpeg")})
        body = problem(r, 422, code)
        assert body["cause"] == cause, (code, body)
    r = call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": sid},
             files={"image": ("x.jpg", gradient_png(), "image/jpeg")})
    assert "cause" not in problem(r, 422, "no_face")
    schema = httpx.get(enrolled.url + "/openapi.json").json()["components"]["schemas"]["Problem"]["properties"]
    assert schema["cause"]["anyOf"][0]["enum"] == ["too_bright", "too_dark", "blurred", "turned", "too_far", "second_face"]
    # the capture page knows the same causes (it says each in words: tests/browser)
    page = (REPO / "facegate" / "service" / "capture" / "i18n.js").read_text()
    listed = re.search(r"export const CAUSE_CODES = \[([^\]]*)\]", page).group(1)
    assert re.findall(r'"(\w+)"', listed) == schema["cause"]["anyOf"][0]["enum"]


def test_request_and_image_too_large(server):
    big = b"\xff\xd8\xff" + b"\0" * 2_100_000   # over max_image_bytes, under max_request_bytes
    problem(call(server, "kiosk", "POST", "/v1/identify", files={"image": ("x.jpg", big, "image/jpeg")}),
            413, "image_too_large")
    huge = b"\0" * 3_200_000                     # over max_request_bytes: refused before parsing
    problem(call(server, "kiosk", "POST", "/v1/identify", content=huge,
                 headers={"Content-Type": "application/octet-stream"}), 413, "image_too_large")


def test_unknown_subject_and_face(enrolled):
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": "P-NOBODY"},
                 files={"image": ("p.jpg", photo("Colin_Powell", 2), "image/jpeg")}), 404, "unknown_subject")
    problem(call(enrolled, "operator", "GET", "/v1/subjects/P-NOBODY"), 404, "unknown_subject")
    problem(call(enrolled, "operator", "POST", "/v1/subjects/P-NOBODY/faces",
                 files={"image": ("p.jpg", photo("Colin_Powell", 2), "image/jpeg")}), 404, "unknown_subject")
    problem(call(enrolled, "operator", "DELETE", f"/v1/subjects/{subject_id('Colin_Powell')}/faces/999999"),
            404, "unknown_face")


def test_not_enrolled_and_pack_mismatch(enrolled, engine):
    """A subject without templates, and one whose only template was made by another model pack."""
    from facegate.config import Settings
    from facegate.storage.store import Store

    probe = photo("Ann_Veneman", 2)
    assert call(enrolled, "operator", "POST", "/v1/subjects", json={"subject_id": "P-EMPTY"}).status_code == 201
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": "P-EMPTY"},
                 files={"image": ("p.jpg", probe, "image/jpeg")}), 404, "not_enrolled")
    assert call(enrolled, "operator", "POST", "/v1/subjects", json={"subject_id": "P-OLDPACK"}).status_code == 201
    store = Store.open(Settings.load(data_dir=enrolled.env["FACEGATE_DATA_DIR"]))
    try:
        store.add_template("P-OLDPACK", engine.face(photo("Ann_Veneman", 1)).embedding, pack_id="retired-pack-v0",
                           source="test: a template from an older model pack")
    finally:
        store.close()
    body = problem(call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": "P-OLDPACK"},
                        files={"image": ("p.jpg", probe, "image/jpeg")}), 409, "pack_mismatch")
    assert body["template_packs"] == ["retired-pack-v0"]


def test_conflicts(enrolled):
    problem(call(enrolled, "operator", "POST", "/v1/subjects", json={"subject_id": subject_id("Colin_Powell")}),
            409, "subject_exists")
    assert call(enrolled, "operator", "POST", "/v1/subjects", json={"subject_id": "P-DUP"}).status_code == 201
    problem(call(enrolled, "operator", "POST", "/v1/subjects/P-DUP/faces",
                 files={"image": ("p.jpg", photo("Colin_Powell", 3), "image/jpeg")}), 409, "duplicate_identity")


def test_invalid_requests(enrolled):
    sid = subject_id("Colin_Powell")
    p = photo("Colin_Powell", 2)
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", files={"image": ("p.jpg", p, "image/jpeg")}),
            422, "invalid_request")                                          # no subject_id
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": sid}), 422, "invalid_request")
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", content=b"{not json",
                 headers={"Content-Type": "application/json"}), 422, "invalid_request")
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", json={"subject_id": sid, "image": "%%%not base64"}),
            422, "invalid_request")
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", json=[1, 2]), 422, "invalid_request")
    problem(call(enrolled, "kiosk", "POST", "/v1/identify", data={"top_k": "many"},
                 files={"image": ("p.jpg", p, "image/jpeg")}), 422, "invalid_request")
    problem(call(enrolled, "kiosk", "POST", "/v1/identify", data={"top_k": "0"},
                 files={"image": ("p.jpg", p, "image/jpeg")}), 422, "invalid_request")
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", content=p, headers={"Content-Type": "image/jpeg"}),
            422, "invalid_request")
    problem(call(enrolled, "kiosk", "POST", "/v1/verify", json={"subject_id": sid, "image": p.hex(),
                                                                "liveness_session_id": "ls_nope"}),
            422, "invalid_request")
    problem(call(enrolled, "operator", "POST", "/v1/subjects", json={"subject_id": "bad id with spaces"}),
            422, "invalid_request")
    problem(call(enrolled, "operator", "POST", "/v1/subjects", json={"subject_id": "P-X", "unexpected": 1}),
            422, "invalid_request")
    problem(call(enrolled, "operator", "PATCH", f"/v1/subjects/{sid}", json={"status": "gone"}),
            422, "invalid_request")
    problem(call(enrolled, "admin", "GET", "/v1/audit?limit=-5"), 422, "invalid_request")


def test_not_found_and_method(server):
    problem(call(server, "admin", "GET", "/v1/nothing-here"), 404, "not_found")
    problem(httpx.get(server.url + "/etc/passwd"), 404, "not_found")
    problem(call(server, "admin", "GET", "/v1/verify"), 405, "method_not_allowed")


def test_rate_limited(server):
    answers = [call(server, "limited", "POST", "/v1/verify", json={}) for _ in range(5)]
    assert [a.status_code for a in answers[:3]] == [422, 422, 422]
    body = problem(answers[3], 429, "rate_limited")
    assert int(answers[3].headers["Retry-After"]) >= 1 and body["retry_after"] >= 1


def test_overloaded(enrolled):
    """Concurrency 1 + queue 1: a burst of identifications gets some 503 overloaded at once."""
    image = photo("Colin_Powell", 2)

    async def burst():
        async with httpx.AsyncClient(base_url=enrolled.url, timeout=60,
                                     headers={"X-API-Key": enrolled.keys["kiosk"]["key"]}) as client:
            return await asyncio.gather(*[client.post("/v1/identify", files={"image": ("p.jpg", image, "image/jpeg")})
                                          for _ in range(12)])

    answers = asyncio.run(burst())
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    refused = next(a for a in answers if a.status_code == 503)
    problem(refused, 503, "overloaded")
    assert int(refused.headers["Retry-After"]) >= 1


def test_metrics(enrolled):
    text = httpx.get(enrolled.url + "/metrics").text
    for name in ("facegate_requests_total", 'facegate_stage_seconds_count{stage="detect"}',
                 'facegate_stage_seconds_count{stage="embed"}', 'facegate_stage_seconds_count{stage="search"}',
                 'facegate_errors_total{code="no_face"}', "facegate_gallery_templates"):
        assert name in text, name


# ------------------------------------------------------------------ audit
def test_audit_trail_and_tampering(enrolled, tmp_path):
    sid = subject_id("Andre_Agassi")
    for image in (photo("Andre_Agassi", 2), gradient_png()):
        call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": sid},
             files={"image": ("p.jpg", image, "image/jpeg")}, headers={"X-Client-Id": "kiosk-01"})
    # the key belongs to kiosk-01: it cannot record its decisions under another device's id
    r = call(enrolled, "kiosk", "POST", "/v1/verify", data={"subject_id": sid},
             files={"image": ("p.jpg", photo("Andre_Agassi", 2), "image/jpeg")}, headers={"X-Client-Id": "kiosk-test-7"})
    assert r.status_code == 403 and r.json()["code"] == "client_id_mismatch"
    r = call(enrolled, "admin", "GET", "/v1/audit", params={"operation": "verify", "limit": 1000})
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    genuine = [e for e in entries if e["outcome"] == "match"]
    assert genuine and genuine[0]["key_id"] and genuine[0]["request_id"] and genuine[0]["client_id"]
    assert any(e["client_id"] == "kiosk-01" and e["subject_id"] == sid for e in genuine)
    assert genuine[0]["scores"]["score"] >= genuine[0]["scores"]["threshold"]
    assert any(e["outcome"] == "no_face" for e in entries)
    for e in entries:
        assert set(e["detail"] or {}) <= {"decision_id", "face_id", "review_reasons", "liveness_session_id"}

    ok = cli(enrolled.env, "audit", "verify", "--json")
    assert json.loads(ok.stdout)["ok"] is True

    # tamper with a copy of the live database: change one verify outcome
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    src = sqlite3.connect(f"{enrolled.env['FACEGATE_DATA_DIR']}/facegate.db")
    dst = sqlite3.connect(copy_dir / "facegate.db")
    src.backup(dst)
    src.close()
    seq = genuine[0]["seq"]
    dst.execute("UPDATE audit_log SET outcome = 'no_match' WHERE seq = ?", (seq,))
    dst.commit()
    env = {**enrolled.env, "FACEGATE_DATA_DIR": str(copy_dir)}
    bad = cli(env, "audit", "verify", "--json", check=False)
    assert bad.returncode == 1
    assert json.loads(bad.stdout) == {"ok": False, "rows": seq, "first_bad_seq": seq}

    # removing a row in the middle is detected at the row after it
    dst.execute("UPDATE audit_log SET outcome = 'match' WHERE seq = ?", (seq,))
    dst.commit()
    assert cli(env, "audit", "verify", "--json").returncode == 0
    dst.execute("DELETE FROM audit_log WHERE seq = ?", (seq,))
    dst.commit()
    dst.close()
    bad = cli(env, "audit", "verify", "--json", check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["first_bad_seq"] == seq + 1


def test_cli_keys_and_audit_list(server):
    listed = json.loads(cli(server.env, "keys", "list", "--json").stdout)
    by_id = {k["key_id"]: k for k in listed}
    assert by_id[server.keys["revoked"]["key_id"]]["revoked_at"]
    assert by_id[server.keys["kiosk"]["key_id"]]["role"] == "kiosk"
    assert all("key_hash" not in k and "key" not in k for k in listed)
    created = [json.loads(line) for line in
               cli(server.env, "audit", "list", "--operation", "key.create", "--json").stdout.splitlines()]
    by_cli = {e["key_id"] for e in created if e["actor"].startswith("cli:")}
    assert {server.keys["admin"]["key_id"], server.keys["revoked"]["key_id"]} <= by_cli
    assert {k["key_id"] for k in listed} == {e["key_id"] for e in created}      # every key's creation is audited


def test_server_still_alive(server):
    assert server.alive(), server.log()
    assert "Traceback" not in server.log(), server.log()


def test_no_cors_by_default(server):
    r = httpx.options(server.url + "/v1/verify", headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    r = call(server, None, "POST", "/v1/verify", json={}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_two_workers_share_one_gallery(tmp_path):
    """``--workers 2``: whichever process answers, an enrolment is visible to verify at once and
    to identify after the index sync."""
    need_shared("data", "lfw-dev", "images")
    srv = Server(tmp_path / "two", workers=2, index_sync_s=0.3, rate_limit_per_minute=100_000)
    srv.keys = {"admin": create_key(srv.env, "admin")}
    srv.start()
    try:
        sid = subject_id("Amelia_Vega")
        assert call(srv, "admin", "POST", "/v1/subjects", json={"subject_id": sid}).status_code == 201
        r = call(srv, "admin", "POST", f"/v1/subjects/{sid}/faces",
                 files={"image": ("e.jpg", photo("Amelia_Vega", 1), "image/jpeg")})
        assert r.status_code == 201, r.text
        probe = photo("Amelia_Vega", 2)
        for _ in range(4):   # new connections: both workers get some of them
            r = call(srv, "admin", "POST", "/v1/verify", data={"subject_id": sid},
                     files={"image": ("p.jpg", probe, "image/jpeg")})
            assert r.status_code == 200 and r.json()["match"] is True, r.text
        import time
        time.sleep(1.0)
        for _ in range(4):
            r = call(srv, "admin", "POST", "/v1/identify", files={"image": ("p.jpg", probe, "image/jpeg")})
            assert r.status_code == 200 and [c["subject_id"] for c in r.json()["candidates"]] == [sid], r.text
        assert httpx.get(srv.url + "/readyz").status_code == 200
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()
