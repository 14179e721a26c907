"""The liveness HTTP API in-process (FastAPI TestClient on the real app and models): a session,
its capture as JPEG frames over two requests or as one video, the verdict, single use, roles."""
from __future__ import annotations

import dataclasses

import cv2
import pytest

from conftest import need_shared


@pytest.fixture(scope="module")
def client(tmp_path_factory, settings):
    from fastapi.testclient import TestClient

    from facegate.storage import apikeys
    from facegate.service.app import create_app

    need_shared("data", "face-videos")
    data = tmp_path_factory.mktemp("liveness-service")
    app = create_app(dataclasses.replace(settings, data_dir=str(data), database_url="", liveness_seed=3,
                                         rate_limit_per_minute=100_000))
    with TestClient(app) as c:
        db = app.state.facegate.db
        made = {name: apikeys.create_key(db, role) for name, role in
                (("kiosk", "kiosk"), ("kiosk2", "kiosk"), ("operator", "operator"))}
        c.keys = {name: secret for name, (secret, _) in made.items()}
        c.records = {name: record for name, (_, record) in made.items()}
        c.state = app.state.facegate
        yield c


def h(client, who):
    return {"X-API-Key": client.keys[who]}


def verdicts(decision: str) -> float:
    """``facegate_decisions_total{operation="liveness"}`` for ``decision`` (alerts.yml reads it)."""
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("facegate_decisions_total", {"operation": "liveness", "decision": decision}) or 0.0


def clip_frames(name, start, end):
    from facegate.liveness.attacks import segment
    from facegate.liveness.capture import Capture
    cap = Capture(max_frames=1000, max_seconds=60)
    cap.add_video((need_shared("data", "face-videos") / f"{name}.mp4").read_bytes(), 40_000_000)
    return [(f.t, cv2.imencode(".jpg", f.bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
            for f in segment(cap, start, end).frames]


def test_roles(client):
    r = client.post("/v1/liveness/sessions", headers=h(client, "operator"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert client.post("/v1/liveness/sessions").status_code == 401


def test_frames_in_two_requests_then_complete(client):
    # the seeded store draws challenges deterministically; take the first one the clip answers
    # (d18 1-7.2 s: mouth open ~2.2 s, blink ~3.2 s, mouth open ~4.0 s, blink ~6.2 s)
    answerable = (["open_mouth", "blink"], ["blink", "open_mouth"])
    live_before = verdicts("live")
    for _ in range(200):
        r = client.post("/v1/liveness/sessions", headers=h(client, "kiosk"),
                        json={"subject_id": "P-1", "purpose": "pension"})
        assert r.status_code == 201, r.text
        body = r.json()
        if body["challenge"] in answerable:
            break
    assert body["challenge"] in answerable and body["nonce"] and body["expires_at"].endswith("Z")
    sid = body["session_id"]
    assert client.get(f"/v1/liveness/sessions/{sid}", headers=h(client, "kiosk2")).status_code == 404

    frames = clip_frames("d18", 1.0, 7.2)
    half = len(frames) // 2
    for part in (frames[:half], frames[half:]):
        files = [("frames", (f"{i}.jpg", data, "image/jpeg")) for i, (_, data) in enumerate(part)]
        r = client.post(f"/v1/liveness/sessions/{sid}/frames", headers=h(client, "kiosk"), files=files,
                        data={"nonce": body["nonce"], "timestamps": ",".join(f"{t:.4f}" for t, _ in part)})
        assert r.status_code == 200, r.text
    assert r.json()["frames_received"] == len(frames)

    bad = client.post(f"/v1/liveness/sessions/{sid}/complete", headers=h(client, "kiosk"), json={"nonce": "x"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"
    r = client.post(f"/v1/liveness/sessions/{sid}/complete", headers=h(client, "kiosk"), json={"nonce": body["nonce"]})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["live"], result["reasons"]
    assert verdicts("live") == live_before + 1
    assert [a["action"] for a in result["actions"]] == body["challenge"] and all(a["detected"] for a in result["actions"])
    assert "embedding" not in result and result["passive"]["available"]
    again = client.post(f"/v1/liveness/sessions/{sid}/complete", headers=h(client, "kiosk"), json={"nonce": body["nonce"]})
    assert again.status_code == 409 and again.json()["code"] == "liveness_session_closed"

    # what /v1/verify calls: once, by the key that opened it, with the live face's embedding
    from facegate.errors import FacegateError
    with pytest.raises(FacegateError, match="liveness_session_unknown"):
        client.state.liveness.consume(sid, client.records["kiosk2"])
    used = client.state.liveness.consume(sid, client.records["kiosk"])
    assert used.passed and used.embedding.shape == (512,)
    with pytest.raises(FacegateError, match="liveness_session_closed"):
        client.state.liveness.consume(sid, client.records["kiosk"])


def test_video_upload_judged_at_once(client):
    not_live_before = verdicts("not_live")
    r = client.post("/v1/liveness/sessions", headers=h(client, "kiosk"))
    body = r.json()
    video = (need_shared("data", "face-videos") / "d0.mp4").read_bytes()    # only blinks, once
    r = client.post(f"/v1/liveness/sessions/{body['session_id']}/video", headers=h(client, "kiosk"),
                    files=[("video", ("d0.mp4", video, "video/mp4"))], data={"nonce": body["nonce"], "complete": "true"})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["challenge"] == body["challenge"] and len(result["challenge"]) >= 2
    assert not result["live"] and result["reasons"]
    assert verdicts("not_live") == not_live_before + 1
    assert all(x.startswith("action_not_detected:") for x in result["reasons"]), result["reasons"]
    assert result["capture"]["frames"] == 78
    late = client.post(f"/v1/liveness/sessions/{body['session_id']}/frames", headers=h(client, "kiosk"),
                       files=[("frames", ("a.jpg", b"\xff\xd8\xff", "image/jpeg"))],
                       data={"nonce": body["nonce"], "timestamps": "0"})
    assert late.status_code == 409 and late.json()["code"] == "liveness_session_closed"
    junk = client.post("/v1/liveness/sessions", headers=h(client, "kiosk")).json()
    r = client.post(f"/v1/liveness/sessions/{junk['session_id']}/video", headers=h(client, "kiosk"),
                    files=[("video", ("x.mp4", b"not a video at all", "video/mp4"))], data={"nonce": junk["nonce"]})
    assert r.status_code == 415 and r.json()["code"] == "unsupported_image"


def test_a_capture_token_opens_its_own_session_and_nothing_else(client):
    made = client.post("/v1/liveness/sessions", headers=h(client, "kiosk"), json={"subject_id": "P-9"}).json()
    other = client.post("/v1/liveness/sessions", headers=h(client, "kiosk")).json()
    token = made["capture_token"]
    assert token.startswith("fgc_") and token != other["capture_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    r = client.get(f"/v1/liveness/sessions/{made['session_id']}", headers=bearer)
    assert r.status_code == 200 and r.json()["challenge"] == made["challenge"] and r.json()["capture_token"] is None
    r = client.get(f"/v1/liveness/sessions/{other['session_id']}", headers=bearer)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    for method, path in (("POST", "/v1/verify"), ("POST", "/v1/identify"), ("GET", "/v1/subjects"),
                         ("POST", "/v1/certifications"), ("POST", "/v1/kiosk/authenticate"),
                         ("POST", "/v1/liveness/sessions")):
        r = client.request(method, path, headers=bearer)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (path, r.text)
    forged = {"Authorization": f"Bearer fgc_{made['session_id']}.not-the-secret"}
    assert client.get(f"/v1/liveness/sessions/{made['session_id']}", headers=forged).status_code == 401


def _session_with(client, wanted) -> dict:
    for _ in range(200):
        body = client.post("/v1/liveness/sessions", headers=h(client, "kiosk")).json()
        if wanted(body["challenge"]):
            return body
    pytest.fail("no such challenge drawn in 200 sessions")


def _send(client, body, frames, **extra):
    files = [("frames", (f"{i}.jpg", data, "image/jpeg")) for i, (_, data) in enumerate(frames)]
    return client.post(f"/v1/liveness/sessions/{body['session_id']}/frames", headers=h(client, "kiosk"), files=files,
                       data={"nonce": body["nonce"], "timestamps": ",".join(f"{t:.4f}" for t, _ in frames), **extra})


def test_a_live_capture_replayed_against_another_challenge_fails(client):
    """A recording of a live person (d18 1-7.2 s opens the mouth and blinks, nothing else)
    replayed to a session whose random challenge asks for a head movement: the recording cannot
    answer a challenge drawn after it was made."""
    body = _session_with(client, lambda ch: any(a in ch for a in ("turn_left", "turn_right", "nod")))
    frames = clip_frames("d18", 1.0, 7.2)
    assert _send(client, body, frames[:100]).status_code == 200
    r = _send(client, body, frames[100:], complete="true")
    assert r.status_code == 200, r.text
    result = r.json()
    assert not result["live"]
    asked = [a for a in body["challenge"] if a in ("turn_left", "turn_right", "nod")]
    assert {f"action_not_detected:{a}" for a in asked} & set(result["reasons"]), result["reasons"]


def test_chunks_out_of_order_answer_409_and_the_capture_is_judged_once(client):
    body = _session_with(client, lambda ch: True)
    frames = clip_frames("d0", 0.0, 1.0)
    assert _send(client, body, frames[:10]).json()["frames_received"] == 10
    assert _send(client, body, frames[10:20]).json()["frames_received"] == 20
    assert _send(client, body, frames[10:20]).json()["frames_received"] == 20       # a retried chunk
    late = _send(client, body, frames[5:8])
    assert late.status_code == 409 and late.json()["code"] == "frames_out_of_order", late.text
    sid = body["session_id"]
    done = client.post(f"/v1/liveness/sessions/{sid}/complete", headers=h(client, "kiosk"), json={"nonce": body["nonce"]})
    assert done.status_code == 200 and done.json()["capture"]["frames"] == 20
    after = _send(client, body, frames[20:])
    assert after.status_code == 409 and after.json()["code"] == "liveness_session_closed"
