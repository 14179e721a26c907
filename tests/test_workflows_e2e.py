"""Pension certification and kiosk authentication end to end, over a real server on loopback.

The pensioner is the person in ``../shared/data/face-videos/d18.mp4``: enrolled from a frame at
0.5 s, certifying with the clip's 1.0-7.2 s segment (mouth open ~2.2 s, blink ~3.2 s, mouth open
~4.0 s, blink ~6.2 s), which answers the challenges [open_mouth, blink] and [blink, open_mouth].
Challenges are drawn from a seeded generator (FACEGATE_LIVENESS_SEED, tests only).
"""
from __future__ import annotations

import json

import cv2
import httpx
import pytest

from conftest import need_shared
from service_support import Server, cli, create_key

ANSWERABLE = (["open_mouth", "blink"], ["blink", "open_mouth"])


def clip(start: float, end: float):
    from facegate.liveness.attacks import segment
    from facegate.liveness.capture import Capture
    cap = Capture(max_frames=1000, max_seconds=60)
    cap.add_video((need_shared("data", "face-videos") / "d18.mp4").read_bytes(), 40_000_000)
    return segment(cap, start, end)


def jpeg(bgr) -> bytes:
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    need_shared("data", "face-videos")
    srv = Server(tmp_path_factory.mktemp("workflows"), liveness_seed=5, rate_limit_per_minute=100_000).start()
    keys = {role: create_key(srv.env, role)["key"] for role in ("admin", "operator", "app")}
    kiosk = json.loads(cli(srv.env, "kiosks", "add", "--location", "Police station 7", "--id", "k-07",
                           "--json").stdout)
    keys["kiosk"] = kiosk["key"]
    live = clip(1.0, 7.2)
    frames = [(f.t, jpeg(f.bgr)) for f in live.frames]
    enrol_frame = jpeg(clip(0.4, 0.6).frames[0].bgr)
    yield {"srv": srv, "keys": keys, "frames": frames, "enrol": enrol_frame, "still": live.frames[40].bgr}
    srv.stop()


def call(env, who, method, path, headers=None, **kw):
    return httpx.request(method, env["srv"].url + path, headers={"X-API-Key": env["keys"][who]} | (headers or {}),
                         timeout=120, **kw)


def live_session(env, who, subject_id=None, frames=None):
    """A liveness session whose challenge the frames answer, captured and judged."""
    for _ in range(200):
        r = call(env, who, "POST", "/v1/liveness/sessions", json={"subject_id": subject_id} if subject_id else {})
        assert r.status_code == 201, r.text
        s = r.json()
        if frames is not None or s["challenge"] in ANSWERABLE:
            break
    frames = frames if frames is not None else env["frames"]
    for start in range(0, len(frames), 100):               # at most 120 frames per request
        part = frames[start:start + 100]
        files = [("frames", (f"{i}.jpg", data, "image/jpeg")) for i, (_, data) in enumerate(part)]
        last = start + 100 >= len(frames)
        r = call(env, who, "POST", f"/v1/liveness/sessions/{s['session_id']}/frames", files=files,
                 data={"nonce": s["nonce"], "timestamps": ",".join(f"{t:.4f}" for t, _ in part),
                       "complete": "true" if last else "false"})
        assert r.status_code == 200, r.text
    return s["session_id"], r.json()


def stored_evidence(env) -> dict:
    """Rows of held liveness frames and of review evidence in the server's database."""
    import sqlite3
    with sqlite3.connect(f"{env['srv'].env['FACEGATE_DATA_DIR']}/facegate.db") as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("liveness_evidence", "review_evidence")}


def add_subject(env, subject_id, face: bytes | None = None, allow_duplicate=False, status="active"):
    r = call(env, "admin", "POST", "/v1/subjects", json={"subject_id": subject_id, "name": subject_id,
                                                         "status": status})
    assert r.status_code == 201, r.text
    if face is not None:
        r = call(env, "admin", "POST", f"/v1/subjects/{subject_id}/faces", files={"image": ("f.jpg", face)},
                 data={"allow_duplicate": str(allow_duplicate).lower()})
        assert r.status_code == 201, r.text


def certify(env, subject_id, session_id):
    return call(env, "app", "POST", "/v1/certifications",
                data={"subject_id": subject_id, "liveness_session_id": session_id})


def test_pensioner_certifies_with_a_live_clip(env):
    add_subject(env, "PEN-1", env["enrol"])
    sid, verdict = live_session(env, "app", "PEN-1")
    assert verdict["live"], verdict["reasons"]
    r = certify(env, "PEN-1", sid)
    assert r.status_code == 201, r.text
    cert = r.json()
    assert cert["outcome"] == "certified" and cert["method"] == "face", cert
    assert cert["score"] >= cert["threshold"] and cert["fraud_signals"] == []
    assert cert["valid_until"].startswith(f"{int(cert['period']) + 1}-01-01")
    assert cert.get("review_case_id") is None
    kept = stored_evidence(env)                             # an automatic outcome keeps no frame (issue 23)
    assert kept["liveness_evidence"] == 0 and kept["review_evidence"] == 0, kept
    again = certify(env, "PEN-1", sid)                       # a passed session is single-use
    assert again.status_code == 409 and again.json()["code"] == "liveness_session_closed"


def test_still_photo_fails_and_is_flagged(env):
    from facegate.liveness.attacks import still_photo
    attack = still_photo(env["still"], seconds=6.0, fps=25, jitter=True, noise=True, seed=1)
    frames = [(f.t, jpeg(f.bgr)) for f in attack.frames]
    sid, verdict = live_session(env, "app", "PEN-1", frames=frames)
    assert not verdict["live"]
    cert = certify(env, "PEN-1", sid).json()
    assert cert["outcome"] == "failed" and "liveness_failed" in cert["reasons"]
    assert "liveness_failed" in cert["fraud_signals"]
    # failed with a fraud signal: a person looks at it, with the capture's frames kept encrypted (issue 23)
    assert cert["review_case_id"], cert
    kept = stored_evidence(env)
    assert kept["liveness_evidence"] == 0 and kept["review_evidence"] >= 1, kept


def test_kiosk_person_vs_chip_photo_and_search(env):
    from facegate.evaluation.documents import chip_photo
    sid, verdict = live_session(env, "kiosk")
    assert verdict["live"]
    chip = chip_photo(cv2.imdecode(__import__("numpy").frombuffer(env["enrol"], "uint8"), cv2.IMREAD_COLOR))
    r = call(env, "kiosk", "POST", "/v1/kiosk/authenticate", data={"liveness_session_id": sid},
             files={"document_image": ("chip.jpg", chip)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "document" and body["decision"] == "match", body
    assert body["kiosk_id"] == "k-07" and body["operating_point"]["table"].endswith("default-document.json")

    sid, _ = live_session(env, "kiosk")
    body = call(env, "kiosk", "POST", "/v1/kiosk/authenticate", data={"liveness_session_id": sid}).json()
    assert body["mode"] == "search" and body["decision"] == "match" and body["subject_id"] == "PEN-1", body

    # a photo held up without a liveness session never opens the kiosk
    body = call(env, "kiosk", "POST", "/v1/kiosk/authenticate", data={"subject_id": "PEN-1"},
                files={"image": ("still.jpg", jpeg(env["still"]))}).json()
    assert body["decision"] == "manual_review" and "no_liveness" in body["review_reasons"]

    report = json.loads(cli(env["srv"].env, "kiosks", "report", "--json").stdout)
    k = next(r for r in report if r["kiosk_id"] == "k-07")
    assert k["attempts"] == 3 and k["accepts"] == 2 and k["manual_reviews"] == 1
    assert k["by_reason"] == {"no_liveness": 1} and k["median_latency_ms"] > 0
    metrics = httpx.get(env["srv"].url + "/metrics").text
    assert 'facegate_kiosk_decisions_total{decision="match",kiosk="k-07",mode="document"} 1.0' in metrics


def test_a_kiosk_key_cannot_speak_for_another_kiosk(env):
    r = call(env, "kiosk", "POST", "/v1/kiosk/authenticate", data={"subject_id": "PEN-1"},
             files={"image": ("still.jpg", jpeg(env["still"]))}, headers={"X-Client-Id": "k-99"})
    assert r.status_code == 403 and r.json()["code"] == "client_id_mismatch", r.text
    entries = call(env, "admin", "GET", "/v1/audit", params={"operation": "auth.refused"}).json()["entries"]
    assert entries[-1]["outcome"] == "client_id_mismatch" and entries[-1]["key_id"]
    assert entries[-1]["client_id"] == "k-99" and entries[-1]["detail"]["route"] == "/v1/kiosk/authenticate"
    # its own id in the header is fine, and the decision is recorded against it
    r = call(env, "kiosk", "POST", "/v1/kiosk/authenticate", data={"subject_id": "PEN-1"},
             files={"image": ("still.jpg", jpeg(env["still"]))}, headers={"X-Client-Id": "k-07"})
    assert r.status_code == 200 and r.json()["kiosk_id"] == "k-07", r.text


def test_second_subject_with_the_same_face_raises_the_fraud_signal(env):
    add_subject(env, "PEN-2", env["enrol"], allow_duplicate=True)     # enrolled under two identities
    sid, verdict = live_session(env, "app", "PEN-2")
    assert verdict["live"]
    cert = certify(env, "PEN-2", sid).json()
    assert cert["outcome"] == "manual_review" and "shared_face" in cert["reasons"]
    signals = call(env, "operator", "GET", "/v1/fraud-signals", params={"kind": "shared_face"}).json()["signals"]
    assert any(s["subject_id"] == "PEN-2" and s["other_subject_id"] == "PEN-1" for s in signals)


def test_deceased_subject_cannot_certify(env):
    add_subject(env, "PEN-DEAD", env["enrol"], allow_duplicate=True, status="deceased")
    r = call(env, "app", "POST", "/v1/liveness/sessions", json={"subject_id": "PEN-DEAD"})
    cert = certify(env, "PEN-DEAD", r.json()["session_id"]).json()
    assert cert["outcome"] == "failed" and cert["reasons"] == ["subject_deceased"]
    signals = call(env, "operator", "GET", "/v1/fraud-signals", params={"subject_id": "PEN-DEAD"}).json()["signals"]
    assert [s["kind"] for s in signals] == ["deceased_subject"]
    manual = call(env, "operator", "POST", "/v1/certifications/manual",
                  json={"subject_id": "PEN-DEAD", "outcome": "certified", "note": "relative brought papers"})
    assert manual.status_code == 422


def test_manual_review_certifies_and_is_audited(env):
    add_subject(env, "PEN-3")
    r = call(env, "app", "POST", "/v1/certifications/manual",
             json={"subject_id": "PEN-3", "outcome": "certified", "note": "x"})
    assert r.status_code == 403                                       # the app may not
    r = call(env, "operator", "POST", "/v1/certifications/manual",
             json={"subject_id": "PEN-3", "outcome": "certified", "note": "seen in person at office 12 with ID card"})
    assert r.status_code == 201, r.text
    assert r.json()["method"] == "manual" and r.json()["outcome"] == "certified"
    audit = call(env, "admin", "GET", "/v1/audit", params={"subject_id": "PEN-3"}).json()
    entries = audit["entries"] if isinstance(audit, dict) else audit
    manual = [e for e in entries if e["operation"] == "certify_manual"]
    assert manual and manual[0]["outcome"] == "certified" and "office 12" in json.dumps(manual[0]["detail"])
    assert json.loads(cli(env["srv"].env, "audit", "verify", "--json").stdout)["ok"] is True


def test_due_and_overdue_lists_across_the_period_boundary(env):
    add_subject(env, "PEN-4")                                         # never certifies
    now = call(env, "operator", "GET", "/v1/certifications").json()
    year = int(now["period"])
    by_id = {i["subject_id"]: i["status"] for i in now["items"]}
    assert by_id["PEN-1"] == "certified" and by_id["PEN-3"] == "certified"
    assert by_id["PEN-2"] == "manual_review" and by_id["PEN-4"] == "due"
    assert "PEN-DEAD" not in by_id                                    # deceased: not due, not overdue

    after = f"{year + 1}-01-05"
    old = call(env, "operator", "GET", "/v1/certifications",
               params={"period": str(year), "as_of": after, "status": "overdue"}).json()
    assert [i["subject_id"] for i in old["items"]] == ["PEN-4"]
    new = call(env, "operator", "GET", "/v1/certifications",
               params={"period": str(year + 1), "as_of": after, "status": "due"}).json()
    assert {"PEN-1", "PEN-3", "PEN-4"} <= {i["subject_id"] for i in new["items"]}

    proc = cli(env["srv"].env, "report", "certifications", "--period", str(year), "--as-of", after,
               "--format", "csv")
    rows = proc.stdout.strip().splitlines()
    assert rows[0].startswith("period,subject_id,name,status")
    assert any(r.startswith(f"{year},PEN-4,PEN-4,overdue") for r in rows)
    assert any(r.startswith(f"{year},PEN-1,PEN-1,certified") for r in rows)
