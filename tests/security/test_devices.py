"""Device credentials on a real server: a key with a client id is pinned to it, /metrics series
come only from registered kiosks, the app role cannot search the gallery, and capture tokens
open their own session only."""
from __future__ import annotations

import json

import httpx
import pytest

from conftest import need_shared
from service_support import Server, cli, create_key


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    lfw = need_shared("data", "lfw-dev", "images")
    srv = Server(tmp_path_factory.mktemp("devices"), rate_limit_per_minute=100_000).start()
    srv.keys = {role: create_key(srv.env, role)["key"] for role in ("admin", "app")}
    srv.keys["pinned"] = create_key(srv.env, "app", "--client-id", "backend-01")["key"]
    srv.keys["kiosk"] = json.loads(cli(srv.env, "kiosks", "add", "--location", "Hall A", "--id", "k-11",
                                       "--json").stdout)["key"]
    srv.keys["stray_kiosk"] = create_key(srv.env, "kiosk")["key"]        # a kiosk-role key, no kiosk registered
    srv.photo = sorted((lfw / "Colin_Powell").glob("*.jpg"))[0].read_bytes()
    yield srv
    srv.stop()


def call(srv, who, method, path, headers=None, **kw):
    return httpx.request(method, srv.url + path, headers={"X-API-Key": srv.keys[who]} | (headers or {}),
                         timeout=60, **kw)


def test_a_key_with_a_client_id_cannot_claim_another(server):
    r = call(server, "pinned", "POST", "/v1/liveness/sessions", headers={"X-Client-Id": "phone-77"})
    assert r.status_code == 403 and r.json()["code"] == "client_id_mismatch"
    assert call(server, "pinned", "POST", "/v1/liveness/sessions",
                headers={"X-Client-Id": "backend-01"}).status_code == 201


def test_metric_series_come_only_from_registered_kiosks(server):
    for who in ("kiosk", "stray_kiosk"):
        r = call(server, who, "POST", "/v1/kiosk/authenticate", files={"image": ("p.jpg", server.photo)})
        assert r.status_code == 200, r.text
    metrics = httpx.get(server.url + "/metrics").text
    kiosk_series = {line.split('kiosk="')[1].split('"')[0] for line in metrics.splitlines()
                    if line.startswith("facegate_kiosk_decisions_total{")}
    assert kiosk_series == {"k-11", "unregistered"}, kiosk_series


def test_the_app_role_cannot_search_the_gallery_and_verifies_only_its_own_sessions_subject(server):
    r = call(server, "app", "POST", "/v1/identify", files={"image": ("p.jpg", server.photo)})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert call(server, "admin", "POST", "/v1/subjects", json={"subject_id": "PEN-5"}).status_code == 201
    assert call(server, "admin", "POST", "/v1/subjects/PEN-5/faces",
                files={"image": ("p.jpg", server.photo)}).status_code == 201
    verify = {"data": {"subject_id": "PEN-5"}, "files": {"image": ("p.jpg", server.photo)}}
    r = call(server, "app", "POST", "/v1/verify", **verify)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"          # no session: no answer
    other = call(server, "app", "POST", "/v1/liveness/sessions", json={"subject_id": "PEN-6"}).json()
    r = call(server, "app", "POST", "/v1/verify", data={"subject_id": "PEN-5", "liveness_session_id": other["session_id"]},
             files={"image": ("p.jpg", server.photo)})
    assert r.status_code == 403, r.text                                      # another subject's session
    own = call(server, "app", "POST", "/v1/liveness/sessions", json={"subject_id": "PEN-5"}).json()
    r = call(server, "app", "POST", "/v1/verify", data={"subject_id": "PEN-5", "liveness_session_id": own["session_id"]},
             files={"image": ("p.jpg", server.photo)})
    assert r.status_code == 200 and r.json()["decision"] == "manual_review", r.text    # never judged: not live
    assert "liveness_failed" in r.json()["review_reasons"]


def test_refused_calls_are_audited_and_cannot_flood_the_trail(server):
    from facegate.storage.audit import REFUSALS_PER_MINUTE
    bogus = {"X-API-Key": "fg_k_000000000000.not-a-key"}
    for _ in range(REFUSALS_PER_MINUTE + 20):
        r = httpx.post(server.url + "/v1/verify", headers=bogus, json={"subject_id": "x"}, timeout=30)
        assert r.status_code == 401
    entries = call(server, "admin", "GET", "/v1/audit",
                   params={"operation": "auth.refused", "limit": 1000}).json()["entries"]
    anonymous = [e for e in entries if e["actor"] == "anonymous" and e["outcome"] == "unauthorized"]
    # the source's bucket (shared with the refusals of the tests before) refills at 30 a minute
    assert 10 <= len(anonymous) <= REFUSALS_PER_MINUTE + 5
    assert anonymous[0]["request_id"] and anonymous[0]["detail"]["route"] == "/v1/verify"
    assert anonymous[0]["detail"]["source"] == "127.0.0.1"
    metrics = httpx.get(server.url + "/metrics").text
    unaudited = [float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith("facegate_refusals_unaudited_total ")]
    assert unaudited and unaudited[0] >= 10


def test_a_kiosk_s_review_case_answers_only_its_kiosk_and_bounds_its_wait(server):
    """GET /v1/kiosk/reviews/{id} (issue 38): the kiosk key that opened the case and nobody else;
    the app role and a capture token are refused; an out-of-bound id or wait is a 422."""
    r = call(server, "admin", "POST", "/v1/subjects", json={"subject_id": "KR-1"})
    assert r.status_code == 201, r.text
    r = call(server, "admin", "POST", "/v1/subjects/KR-1/faces", files={"image": ("e.jpg", server.photo, "image/jpeg")})
    assert r.status_code == 201 or r.json()["code"] == "duplicate_identity", r.text   # enrolled by a test above
    body = call(server, "kiosk", "POST", "/v1/kiosk/authenticate",
                files={"image": ("k.jpg", server.photo, "image/jpeg")}).json()
    assert body["decision"] == "manual_review" and body["review_case_id"], body     # no liveness: a person decides
    path = f"/v1/kiosk/reviews/{body['review_case_id']}"
    mine = call(server, "kiosk", "GET", path)
    assert mine.status_code == 200 and mine.json()["status"] == "pending" and mine.json()["action"] == "wait"
    for who, status, code in (("stray_kiosk", 404, "unknown_case"), ("admin", 404, "unknown_case"),
                              ("app", 403, "forbidden")):
        r = call(server, who, "GET", path)
        assert (r.status_code, r.json()["code"]) == (status, code), (who, r.text)
    assert httpx.get(server.url + path).status_code == 401
    session = call(server, "kiosk", "POST", "/v1/liveness/sessions", json={}).json()
    r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {session['capture_token']}"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    for bad in (f"{path}?wait=61", f"{path}?wait=-1", f"{path}?wait=soon", "/v1/kiosk/reviews/0",
                f"/v1/kiosk/reviews/{2 ** 31}", "/v1/kiosk/reviews/x"):
        r = call(server, "kiosk", "GET", bad)
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", (bad, r.text)
