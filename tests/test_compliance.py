"""The 2025 face-recognition rules on a real server (docs/compliance.md): notices, consent
before enrolment and capture, minors, withdrawal (no byte of the erased template left in the
data folder), the ways without a face counted, bounded notice files and clear codes.

The server runs with FACEGATE_CONSENT_REQUIRED=1 (tests/conftest.py turns it off for the tests of
other features)."""
from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from service_support import REPO, Server, cli, create_key

NOTICE = REPO / "docs" / "notice.example.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("compliance")
    srv = Server(data, consent_required=1, liveness_challenge="blink", rate_limit_per_minute=100_000)
    srv.keys = {r: create_key(srv.env, r)["key"] for r in ("admin", "operator", "app")}
    srv.data = data
    srv.start()
    yield srv
    srv.stop()


def call(srv, role, method, path, **kw) -> httpx.Response:
    h = {"X-API-Key": srv.keys[role]} if role else {}
    return httpx.request(method, srv.url + path, headers=h | kw.pop("headers", {}), timeout=120, **kw)


def problem(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    assert r.json()["code"] == code, r.text


def subject(srv, sid, **extra):
    r = call(srv, "admin", "POST", "/v1/subjects", json={"subject_id": sid, "name": sid, **extra})
    assert r.status_code == 201, r.text


def enrol(srv, sid, photo):
    return call(srv, "operator", "POST", f"/v1/subjects/{sid}/faces", files={"image": ("f.jpg", photo)})


def db_rows(srv, sql, *args):
    with sqlite3.connect(srv.data / "facegate.db") as c:
        return c.execute(sql, args).fetchall()


def test_notices_publish_is_validated_versioned_and_audited(server, tmp_path):
    body = json.loads(NOTICE.read_text())
    # no notice yet: consent cannot be asked
    problem(call(server, "admin", "GET", "/v1/notices/current"), 409, "notice_missing")
    bad = {"missing_lang": {"zh-CN": body["zh-CN"]},
           "missing_field": {"zh-CN": body["zh-CN"], "en": {k: v for k, v in body["en"].items() if k != "alternative"}},
           "empty_field": {"zh-CN": body["zh-CN"], "en": body["en"] | {"rights": "  "}},
           "unknown_field": {"zh-CN": body["zh-CN"] | {"script": "x"}, "en": body["en"]},
           "too_long": {"zh-CN": body["zh-CN"] | {"purpose": "长" * 5000}, "en": body["en"]}}
    for name, content in bad.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(content, ensure_ascii=False))
        out = cli(server.env, "notices", "publish", str(f), check=False)
        assert out.returncode == 2 and "notice_invalid" in out.stderr, (name, out.stderr)
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (70 * 1024))
    assert "notice_invalid" in cli(server.env, "notices", "publish", str(huge), check=False).stderr
    not_json = tmp_path / "x.json"
    not_json.write_bytes(b"\xff\xfe not json")
    assert "notice_invalid" in cli(server.env, "notices", "publish", str(not_json), check=False).stderr
    problem(call(server, "admin", "GET", "/v1/notices/current"), 409, "notice_missing")   # nothing half-published
    cli(server.env, "notices", "publish", str(NOTICE))
    second = tmp_path / "v2.json"
    second.write_text(json.dumps(body | {"en": body["en"] | {"rights": body["en"]["rights"] + " Call 12333."}},
                                 ensure_ascii=False))
    cli(server.env, "notices", "publish", str(second))
    cur = call(server, "admin", "GET", "/v1/notices/current").json()
    assert cur["version"] == 2 and cur["texts"]["en"]["rights"].endswith("Call 12333.")
    assert cur["texts"]["zh-CN"]["alternative"] == body["zh-CN"]["alternative"]
    versions = json.loads(cli(server.env, "notices", "show", "--all").stdout)
    assert [v["version"] for v in versions] == [1, 2] and versions[0]["texts"] == body      # older kept
    audit = call(server, "admin", "GET", "/v1/audit", params={"operation": "notice.publish"}).json()["entries"]
    assert [e["detail"]["version"] for e in audit] == [1, 2] and all(e["actor"].startswith("cli:") for e in audit)


def test_enrolment_needs_a_consent_record_for_its_purpose(server, lfw_images):
    photo = (lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg").read_bytes()
    subject(server, "C-1")
    problem(enrol(server, "C-1", photo), 403, "consent_required")
    assert db_rows(server, "SELECT count(*) FROM templates")[0][0] == 0
    # consent on an unknown subject, to an old notice version, with a bad channel: clear codes
    problem(call(server, "operator", "POST", "/v1/subjects/NOPE/consents", json={}), 404, "unknown_subject")
    problem(call(server, "operator", "POST", "/v1/subjects/C-1/consents", json={"notice_version": 1}), 409,
            "notice_version_stale")
    problem(call(server, "operator", "POST", "/v1/subjects/C-1/consents", json={"channel": "fax"}), 422,
            "invalid_request")
    problem(call(server, "app", "POST", "/v1/subjects/C-1/consents", json={}), 403, "forbidden")
    # a consent for another purpose does not open this one
    r = call(server, "operator", "POST", "/v1/subjects/C-1/consents", json={"purpose": "kiosk_service"})
    assert r.status_code == 201, r.text
    problem(enrol(server, "C-1", photo), 403, "consent_required")
    r = call(server, "operator", "POST", "/v1/subjects/C-1/consents",
             json={"purpose": "pension_certification", "channel": "counter"})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["notice_version"] == 2 and rec["channel"] == "counter" and rec["decision"] == "given"
    assert rec["recorded_by"].startswith("key:") and rec["subject_id"] == "C-1"
    r = enrol(server, "C-1", photo)
    assert r.status_code == 201, r.text
    row = db_rows(server, "SELECT detail FROM audit_log WHERE operation='template.add' AND subject_id='C-1'")
    assert json.loads(row[-1][0])["consent"]["consent_id"] == rec["consent_id"]     # which consent allowed it


def test_a_minor_needs_a_guardians_record(server, lfw_images):
    photo = (lfw_images / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg").read_bytes()
    subject(server, "M-1", minor=True)
    problem(call(server, "operator", "POST", "/v1/subjects/M-1/consents", json={}), 403, "guardian_consent_required")
    problem(enrol(server, "M-1", photo), 403, "guardian_consent_required")
    # a session for the minor: even a consent on the capture page does not open the capture
    s = call(server, "app", "POST", "/v1/liveness/sessions", json={"subject_id": "M-1"}).json()
    tok = {"Authorization": f"Bearer {s['capture_token']}"}
    r = call(server, None, "POST", f"/v1/liveness/sessions/{s['session_id']}/consent", headers=tok,
             json={"decision": "given", "notice_version": 2})
    assert r.status_code == 201, r.text
    problem(call(server, None, "POST", f"/v1/liveness/sessions/{s['session_id']}/frames", headers=tok,
                 data={"nonce": s["nonce"], "timestamps": "0"}, files={"frames": ("f.jpg", photo)}),
            403, "guardian_consent_required")
    problem(call(server, "operator", "POST", "/v1/subjects/M-1/consents",
                 json={"guardian": {"name": "Li Hua", "relation": "uncle"}}), 422, "invalid_request")
    r = call(server, "operator", "POST", "/v1/subjects/M-1/consents",
             json={"guardian": {"name": "Li Hua", "relation": "parent"}})
    assert r.status_code == 201 and r.json()["guardian"] == {"name": "Li Hua", "relation": "parent"}, r.text
    assert enrol(server, "M-1", photo).status_code == 201


def test_no_capture_without_consent_to_the_current_notice(server, lfw_images):
    photo = (lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0002.jpg").read_bytes()
    s = call(server, "app", "POST", "/v1/liveness/sessions", json={"subject_id": "C-1", "purpose": "pension"}).json()
    sid, tok = s["session_id"], {"Authorization": f"Bearer {s['capture_token']}"}
    frames = {"data": {"nonce": s["nonce"], "timestamps": "0"}, "files": {"frames": ("f.jpg", photo)}}
    st = call(server, None, "GET", f"/v1/liveness/sessions/{sid}", headers=tok).json()
    assert st["consent"]["required"] and st["consent"]["state"] == "none" and st["consent"]["notice"]["version"] == 2
    assert set(st["consent"]["notice"]["texts"]) == {"zh-CN", "en"}
    problem(call(server, None, "POST", f"/v1/liveness/sessions/{sid}/frames", headers=tok, **frames), 403,
            "consent_required")
    problem(call(server, None, "POST", f"/v1/liveness/sessions/{sid}/consent", headers=tok,
                 json={"decision": "given", "notice_version": 1}), 409, "notice_version_stale")
    problem(call(server, None, "POST", f"/v1/liveness/sessions/{sid}/consent", headers=tok,
                 json={"decision": "maybe", "notice_version": 2}), 422, "invalid_request")
    # another key may not answer for this session (its owner's), nor an unknown one
    other = create_key(server.env, "app")["key"]
    problem(httpx.post(server.url + f"/v1/liveness/sessions/{sid}/consent", headers={"X-API-Key": other},
                       json={"decision": "given", "notice_version": 2}), 404, "liveness_session_unknown")
    assert db_rows(server, "SELECT count(*) FROM liveness_frames WHERE session_id=?", sid)[0][0] == 0
    r = call(server, None, "POST", f"/v1/liveness/sessions/{sid}/consent", headers=tok,
             json={"decision": "given", "notice_version": 2})
    assert r.status_code == 201 and r.json()["consent"]["channel"] == "capture_page", r.text
    assert r.json()["consent"]["liveness_session_id"] == sid and r.json()["consent"]["subject_id"] == "C-1"
    r = call(server, None, "POST", f"/v1/liveness/sessions/{sid}/frames", headers=tok, **frames)
    assert r.status_code == 200 and r.json()["frames_received"] == 1, r.text
    # declined: the session closes, the alternative is told, nothing can be captured
    s2 = call(server, "app", "POST", "/v1/liveness/sessions", json={"subject_id": "C-1"}).json()
    tok2 = {"Authorization": f"Bearer {s2['capture_token']}"}
    r = call(server, None, "POST", f"/v1/liveness/sessions/{s2['session_id']}/consent", headers=tok2,
             json={"decision": "declined", "notice_version": 2})
    assert r.status_code == 201, r.text
    assert r.json()["alternative"]["zh-CN"].startswith("如您不同意使用人脸识别") and "counter" in r.json()["alternative"]["en"]
    problem(call(server, None, "POST", f"/v1/liveness/sessions/{s2['session_id']}/frames", headers=tok2,
                 data={"nonce": s2["nonce"], "timestamps": "0"}, files={"frames": ("f.jpg", photo)}),
            409, "liveness_session_closed")
    st = call(server, None, "GET", f"/v1/liveness/sessions/{s2['session_id']}", headers=tok2).json()
    assert st["status"] == "failed" and st["result"]["reasons"] == ["consent_declined"] and st["frames_received"] == 0
    assert db_rows(server, "SELECT count(*) FROM liveness_frames WHERE session_id=?", s2["session_id"])[0][0] == 0


def test_the_ways_without_a_face_are_counted_and_a_decliner_is_not_overdue(server):
    subject(server, "A-1")
    subject(server, "A-2")
    r = call(server, "operator", "POST", "/v1/certifications/alternative",
             json={"subject_id": "A-1", "method": "home_visit", "checked_by": "Zhang Wei, street office",
                   "note": "visited at home, ID card checked"})
    assert r.status_code == 201, r.text
    assert r.json()["alternative"] == "home_visit" and r.json()["checked_by"] == "Zhang Wei, street office"
    problem(call(server, "operator", "POST", "/v1/certifications/alternative",
                 json={"subject_id": "A-1", "method": "carrier_pigeon", "checked_by": "x", "note": "y"}),
            422, "invalid_request")
    problem(call(server, "app", "POST", "/v1/certifications/alternative",
                 json={"subject_id": "A-1", "method": "counter", "checked_by": "x", "note": "y"}), 403, "forbidden")
    # A-2 declines at the counter: offered the alternative, so past the deadline not "overdue"
    r = call(server, "operator", "POST", "/v1/subjects/A-2/consents", json={"decision": "declined"})
    assert r.status_code == 201, r.text
    late = (datetime.now(timezone.utc).replace(month=12, day=31) + timedelta(days=2)).isoformat()
    lst = call(server, "operator", "GET", "/v1/certifications", params={"period": str(datetime.now(timezone.utc).year), "as_of": late,
                                                                       "limit": 1000}).json()
    by = {i["subject_id"]: i for i in lst["items"]}
    assert by["A-1"]["status"] == "certified" and by["A-1"]["certified_by"] == "home_visit"
    assert by["A-2"]["status"] == "alternative_offered", by["A-2"]
    assert by["C-1"]["status"] == "alternative_offered"     # declined on the capture page (test above)
    assert by["M-1"]["status"] == "overdue"                  # consented, never certified: overdue as before
    assert lst["certified_by"]["home_visit"] == 1 and lst["counts"]["alternative_offered"] == 2


def test_withdrawal_erases_the_face_and_later_decisions_say_so(server, lfw_images):
    photo = (lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg").read_bytes()
    before = db_rows(server, "SELECT t.embedding_enc, f.embedding_enc FROM templates t JOIN subjects s ON s.pk = t.subject_pk "
                             "LEFT JOIN template_family f ON f.template_id = t.id WHERE s.subject_id = 'C-1'")
    assert before and before[0][1] is not None, "an SFace second opinion is stored beside the template"
    crops = db_rows(server, "SELECT r.photo_enc FROM reference_photos r JOIN subjects s ON s.pk = r.subject_pk "
                            "WHERE s.subject_id = 'C-1'")
    assert len(crops) == 1, "the console's reference photo is kept beside the template"
    r = call(server, "operator", "POST", "/v1/subjects/C-1/consent/withdraw", json={"reason": "asked at counter"})
    assert r.status_code == 200, r.text
    assert r.json()["erased"]["templates"] == 1 and r.json()["erased"]["template_family"] == 1
    assert r.json()["erased"]["reference_photos"] == 1
    assert r.json()["records_withdrawn"] == 3       # kiosk_service, pension_certification, the capture page's
    # no byte of the erased ciphertexts anywhere in the data folder (database, WAL, index snapshot)
    time.sleep(0.5)
    for f in Path(server.data).rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            for template, family in before:
                assert template[12:44] not in blob and family[12:44] not in blob, f
            assert crops[0][0][12:44] not in blob, f
    problem(call(server, "admin", "POST", "/v1/verify", data={"subject_id": "C-1"}, files={"image": ("p.jpg", photo)}),
            410, "consent_withdrawn")
    problem(enrol(server, "C-1", photo), 410, "consent_withdrawn")
    s = call(server, "app", "POST", "/v1/liveness/sessions", json={"subject_id": "C-1"}).json()
    tok = {"Authorization": f"Bearer {s['capture_token']}"}
    call(server, None, "POST", f"/v1/liveness/sessions/{s['session_id']}/consent", headers=tok,
         json={"decision": "given", "notice_version": 2})
    problem(call(server, None, "POST", f"/v1/liveness/sessions/{s['session_id']}/frames", headers=tok,
                 data={"nonce": s["nonce"], "timestamps": "0"}, files={"frames": ("f.jpg", photo)}),
            410, "consent_withdrawn")
    # the audit rows stay, the consent rows stay (marked withdrawn)
    ops = [e["operation"] for e in call(server, "admin", "GET", "/v1/audit", params={"subject_id": "C-1",
                                                                                     "limit": 1000}).json()["entries"]]
    assert "template.add" in ops and "consent.withdraw" in ops
    recs = call(server, "operator", "GET", "/v1/subjects/C-1/consents").json()["consents"]
    assert recs and all(r["withdrawn_at"] for r in recs if r["decision"] == "given" and r["liveness_session_id"] is None)
    assert call(server, "admin", "GET", "/v1/subjects/C-1").json()["withdrawn_at"]
    # a new consent opens enrolment again
    assert call(server, "operator", "POST", "/v1/subjects/C-1/consents", json={}).status_code == 201
    assert enrol(server, "C-1", photo).status_code == 201
    problem(call(server, "operator", "POST", "/v1/subjects/NOPE/consent/withdraw"), 404, "unknown_subject")
    assert json.loads(cli(server.env, "audit", "verify", "--json", check=False).stdout or "{}").get("ok", True)


def test_withdrawal_by_cli(server):
    subject(server, "W-1")
    cli(server.env, "consent", "record", "W-1", "--channel", "counter")
    out = json.loads(cli(server.env, "consent", "withdraw", "W-1", "--reason", "letter", "--json").stdout)
    assert out["records_withdrawn"] == 1 and out["erased"]["templates"] == 0
    assert "unknown_subject" in cli(server.env, "consent", "withdraw", "NOPE", check=False).stderr


def test_withdrawal_racing_enrolments_leaves_no_face(server, lfw_images):
    """Enrolments and a withdrawal sent at once: whichever commits first, no template of the
    person is left, and every refused enrolment says consent_withdrawn."""
    import concurrent.futures as cf
    photos = [(lfw_images / "Abdullah_Gul" / f"Abdullah_Gul_000{i}.jpg").read_bytes() for i in (2, 3, 4)]
    for round_ in range(3):
        sid = f"R-{round_}"
        subject(server, sid)
        assert call(server, "operator", "POST", f"/v1/subjects/{sid}/consents", json={}).status_code == 201
        with cf.ThreadPoolExecutor(4) as pool:
            enrols = [pool.submit(call, server, "admin", "POST", f"/v1/subjects/{sid}/faces",
                                  files={"image": ("f.jpg", p)}, data={"allow_duplicate": "true"}) for p in photos]
            time.sleep(0.05 * round_)
            withdrawal = pool.submit(call, server, "operator", "POST", f"/v1/subjects/{sid}/consent/withdraw")
            answers = [f.result() for f in enrols]
            assert withdrawal.result().status_code == 200, withdrawal.result().text
        for r in answers:
            assert r.status_code == 201 or r.json()["code"] == "consent_withdrawn", r.text
        held = db_rows(server, "SELECT count(*) FROM templates t JOIN subjects s ON s.pk = t.subject_pk "
                               "WHERE s.subject_id = ?", sid)[0][0]
        erased = withdrawal.result().json()["erased"]["templates"]
        assert held == 0 and erased == sum(r.status_code == 201 for r in answers), (held, erased, answers)


def test_erasure_goes_through_the_registry_and_a_new_subject_does_not_inherit_consent(server, lfw_images):
    photo = (lfw_images / "Adam_Sandler" / "Adam_Sandler_0001.jpg").read_bytes()
    subject(server, "E-1")
    assert call(server, "operator", "POST", "/v1/subjects/E-1/consents", json={}).status_code == 201
    assert enrol(server, "E-1", photo).status_code == 201
    assert call(server, "admin", "DELETE", "/v1/subjects/E-1").status_code == 204
    detail = json.loads(db_rows(server, "SELECT detail FROM audit_log WHERE operation='subject.erase' "
                                        "AND subject_id='E-1'")[-1][0])
    assert detail["erased"]["templates"] == 1 and detail["erased"]["template_family"] == 1
    problem(call(server, "operator", "POST", "/v1/subjects/E-1/consents", json={}), 404, "unknown_subject")
    subject(server, "E-1")                              # another person under the same external id
    problem(enrol(server, "E-1", photo), 403, "consent_required")
