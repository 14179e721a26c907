"""The console after an outside review: every /console/api/ answer is no-store, notes and reasons
follow the text rule, a kiosk case's evidence views are in its candidates' audit trail, a
withdrawal needs the subject id typed again, and the audit chain is walked only when asked (and
at most twice a minute).

In-process (FastAPI TestClient on the real app and database). Sign-in is not what is tested
here: the state's operators are replaced by :class:`Door`, which hands out sessions directly."""
from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

CONSOLE = Path(__file__).resolve().parent.parent / "facegate" / "service" / "console"


@dataclasses.dataclass(frozen=True)
class Session:
    operator: str
    role: str
    stage: str
    csrf: str
    secret: str = ""
    device: str = "device"

    @property
    def session(self) -> Session:
        """A finished second factor is the session itself, or a sign-in holding it (``.session``)."""
        return self

    def public(self) -> dict:
        return {"operator": self.operator, "role": self.role, "stage": self.stage, "csrf": self.csrf}


class Door:
    """Console sessions without a sign-in: ``open`` gives the cookie's secret of a new session."""

    def __init__(self):
        self.sessions: dict[str, Session] = {}

    def open(self, operator: str, role: str, stage: str = "active") -> tuple[str, Session]:
        secret = f"secret-{operator}-{stage}"
        self.sessions[secret] = Session(operator, role, stage, f"csrf-{operator}-{stage}", secret)
        return secret, self.sessions[secret]

    def session(self, secret: str | None, *where, **more) -> Session:
        from facegate.errors import FacegateError
        if secret not in self.sessions:
            raise FacegateError("session_expired")
        return self.sessions[secret]

    @staticmethod
    def check_csrf(session: Session, token: str | None) -> None:
        from facegate.errors import FacegateError
        if token != session.csrf:
            raise FacegateError("csrf_failed")

    def verify_code(self, session: Session, code: str, *where, **more):
        from facegate.workflows.review.operators import SignedIn
        secret, active = self.open(session.operator, session.role)
        return SignedIn(secret, active, "a-device-cookie")


def console_app(data_dir: Path, settings):
    from facegate.service.app import create_app
    return create_app(dataclasses.replace(settings, data_dir=str(data_dir), database_url="",
                                          rate_limit_per_minute=100_000))


def jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (shade, 90, 40)).save(out, "JPEG")
    return out.getvalue()


def open_case(st, workflow: str, subject_id: str | None = None, candidates: tuple[str, ...] = ()) -> int:
    from facegate.storage.db import write_transaction
    from facegate.storage.schema import subjects
    with write_transaction(st.db) as conn:
        pk = conn.execute(sa.select(subjects.c.pk).where(subjects.c.subject_id == subject_id)).scalar()
        return st.review.open_case(
            conn, workflow=workflow, subject_pk=pk, subject_id=subject_id, kiosk_id="k-1" if workflow == "kiosk" else None,
            period="2026", outcome="manual_review", reasons=["score_near_threshold"],
            scores={"score": 0.3, "threshold": 0.33,
                    "candidates": [{"subject_id": c, "score": 0.4} for c in candidates]},
            evidence=[("frame", i, jpeg(60 * i), {}) for i in range(2)])


@pytest.fixture(scope="module")
def console(tmp_path_factory, settings):
    from fastapi.testclient import TestClient

    from facegate.storage import apikeys
    app = console_app(tmp_path_factory.mktemp("console-hardening"), settings)
    with TestClient(app, base_url="https://testserver") as c:
        c.st = app.state.facegate
        c.st.operators = c.door = Door()
        c.who = {name: c.door.open(name, role) for name, role in
                 (("ana", "reviewer"), ("di", "supervisor"), ("cy", "auditor"))}
        c.api_key, _ = apikeys.create_key(c.st.db, "operator")
        yield c


def call(c, who: str, method: str, path: str, **kw):
    secret, session = c.who[who]
    headers = {"Cookie": f"fg_console={secret}", "X-CSRF-Token": session.csrf} | kw.pop("headers", {})
    return c.request(method, path, headers=headers, **kw)


def subject(c, subject_id: str) -> str:
    c.st.gallery.store.add_subject(subject_id, name=subject_id)
    return subject_id


def withdrawn_at(c, subject_id: str):
    from facegate.storage.schema import subjects
    with c.st.db.connect() as conn:
        return conn.execute(sa.select(subjects.c.withdrawn_at).where(subjects.c.subject_id == subject_id)).scalar()


def audit_rows(c, **filters) -> list[dict]:
    from facegate.workflows.review import reports
    return reports.audit_search(c.st.db, limit=200, **filters)["entries"]


def refused(r, field: str) -> bool:
    body = r.json()
    return r.status_code == 422 and body["code"] == "invalid_request" and (
        body.get("field") == field or any(e["loc"][-1] == field for e in body.get("errors", [])))


# ---------------------------------------------------------------------------- a. no-store
def test_every_console_api_answer_is_no_store(console):
    c = console
    sid = subject(c, "NS-1")
    case_id = open_case(c.st, "certification", sid)
    mfa_secret, mfa = c.door.open("ed", "reviewer", stage="mfa")
    answers = {
        "mfa": c.post("/console/api/mfa", json={"code": "123456"},
                      headers={"Cookie": f"fg_console={mfa_secret}", "X-CSRF-Token": mfa.csrf}),
        "me": call(c, "ana", "GET", "/console/api/me"),
        "queue": call(c, "ana", "GET", "/console/api/queue"),
        "case": call(c, "ana", "GET", f"/console/api/cases/{case_id}"),
        "evidence": call(c, "ana", "GET", f"/console/api/cases/{case_id}/evidence/frame/0"),
        "subject": call(c, "di", "GET", f"/console/api/subjects/{sid}"),
        "audit": call(c, "cy", "GET", "/console/api/audit"),
        "certifications": call(c, "cy", "GET", "/console/api/certifications"),
        "fraud-signals": call(c, "cy", "GET", "/console/api/fraud-signals"),
        "kiosks": call(c, "cy", "GET", "/console/api/kiosks"),
        "sso": c.get("/console/api/oidc"),
    }
    c.cookies.clear()                                     # the second factor's answer set cookies
    for name, r in answers.items():
        assert r.status_code == 200, (name, r.text)
    assert answers["mfa"].json()["stage"] == "active"
    errors = {
        "no session": c.get("/console/api/queue"),
        "wrong role": call(c, "cy", "GET", f"/console/api/cases/{case_id}/evidence/frame/0"),
        "unknown case": call(c, "ana", "GET", "/console/api/cases/999999"),
        "out of bounds": call(c, "ana", "GET", "/console/api/queue?limit=1000"),
        "control character": call(c, "ana", "GET", "/console/api/queue?subject_id=%1b"),
        "no such route": call(c, "ana", "GET", "/console/api/nowhere"),
    }
    assert [r.status_code for r in errors.values()] == [401, 403, 404, 422, 422, 404]
    for name, r in (answers | errors).items():
        assert r.headers.get_list("cache-control") == ["no-store"], (name, r.headers)
        assert r.headers.get_list("pragma") == ["no-cache"], (name, r.headers)
    assert "cache-control" not in c.get("/healthz").headers          # the rest of the service is unchanged


# ---------------------------------------------------------------------------- b. the text rule
BAD_TEXT = ["signed by \u202eana", "a \x1b[31m red line", "nul\x00", "isolate \u2066x\u2069"]


@pytest.mark.parametrize("bad", BAD_TEXT)
def test_notes_and_reasons_refuse_control_and_bidi_characters(console, bad):
    c = console
    sid = subject(c, f"TX-{BAD_TEXT.index(bad)}")
    cert = open_case(c.st, "certification", sid)
    kiosk = open_case(c.st, "kiosk", candidates=(sid,))
    tries = {
        "decision note": (call(c, "ana", "POST", f"/console/api/cases/{cert}/decision",
                               json={"decision": "certified", "note": bad}), "note"),
        "identification note": (call(c, "ana", "POST", f"/console/api/cases/{kiosk}/identification",
                                     json={"subject_id": sid, "note": bad}), "note"),
        "status reason": (call(c, "di", "POST", f"/console/api/subjects/{sid}/status",
                               json={"status": "suspended", "reason": bad}), "reason"),
        "erase reason": (call(c, "di", "POST", f"/console/api/subjects/{sid}/erase",
                              json={"confirm": sid, "reason": bad}), "reason"),
        "withdraw reason": (call(c, "di", "POST", f"/console/api/subjects/{sid}/withdraw",
                                 json={"confirm": sid, "reason": bad}), "reason"),
        "API withdraw reason": (c.post(f"/v1/subjects/{sid}/consent/withdraw", json={"reason": bad},
                                       headers={"X-API-Key": c.api_key}), "reason"),
    }
    for name, (r, field) in tries.items():
        assert refused(r, field), (name, r.status_code, r.text)
    # nothing was written
    assert c.st.review.case(cert)["status"] == c.st.review.case(kiosk)["status"] == "pending"
    got = call(c, "di", "GET", f"/console/api/subjects/{sid}").json()
    assert got["status"] == "active" and got["withdrawn_at"] is None


def test_a_note_may_hold_line_breaks(console):
    c = console
    sid = subject(c, "TX-LINES")
    kiosk = open_case(c.st, "kiosk", candidates=(sid,))
    r = call(c, "ana", "POST", f"/console/api/cases/{kiosk}/identification",
             json={"subject_id": sid, "note": "asked for the ID card:\n\tit is TX-LINES\r\n"})
    assert r.status_code == 200 and r.json()["decision"] == "identified", r.text
    r = call(c, "di", "POST", f"/console/api/subjects/{sid}/status", json={"status": "suspended", "reason": "two\nlines"})
    assert refused(r, "reason"), r.text                   # a reason is one line


# ---------------------------------------------------------------------------- c. kiosk evidence views
def test_a_kiosk_case_s_evidence_views_are_in_each_candidate_s_audit_trail(console):
    c = console
    a, b = subject(c, "KV-1"), subject(c, "KV-2")
    case_id = open_case(c.st, "kiosk", candidates=(a, b))
    r = call(c, "ana", "GET", f"/console/api/cases/{case_id}/evidence/frame/1")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    for sid in (a, b):
        views = [e for e in audit_rows(c, subject_id=sid, operation="evidence.view")
                 if e["detail"]["case_id"] == case_id]
        assert len(views) == 1, (sid, views)
        assert views[0]["actor"] == "operator:ana" and views[0]["detail"]["image"] == "frame:1"
        assert views[0]["detail"]["subjects"] == [a, b]
        # the console's audit screen, filtered by the subject, shows it too
        shown = call(c, "cy", "GET", "/console/api/audit", params={"subject_id": sid, "operation": "evidence.view"})
        assert case_id in [e["detail"]["case_id"] for e in shown.json()["entries"]], shown.text
    # a certification case's view is one row, its subject's
    sid = subject(c, "KV-3")
    cert = open_case(c.st, "certification", sid)
    assert call(c, "ana", "GET", f"/console/api/cases/{cert}/evidence/frame/0").status_code == 200
    views = [e for e in audit_rows(c, operation="evidence.view") if e["detail"]["case_id"] == cert]
    assert [v["subject_id"] for v in views] == [sid] and "subjects" not in views[0]["detail"]
    from facegate.workflows.review import reports
    assert reports.chain_status(c.st.db)["ok"]


# ---------------------------------------------------------------------------- d. withdrawal confirmed
def test_a_withdrawal_in_the_console_needs_the_subject_id_typed_again(console):
    c = console
    sid = subject(c, "WD-1")
    path = f"/console/api/subjects/{sid}/withdraw"
    for body in ({"reason": "letter of 3 December"}, {"confirm": "", "reason": "letter of 3 December"},
                 {"confirm": "WD-2", "reason": "letter of 3 December"},
                 {"confirm": sid.lower(), "reason": "letter of 3 December"}):
        r = call(c, "di", "POST", path, json=body)
        assert refused(r, "confirm"), (body, r.text)
    assert withdrawn_at(c, sid) is None
    assert audit_rows(c, subject_id=sid, operation="consent.withdraw") == []
    r = call(c, "di", "POST", path, json={"confirm": sid, "reason": "letter of 3 December"})
    assert r.status_code == 200 and r.json()["subject_id"] == sid, r.text
    assert withdrawn_at(c, sid) is not None
    done = audit_rows(c, subject_id=sid, operation="consent.withdraw")
    assert len(done) == 1 and done[0]["actor"] == "operator:di"


# ---------------------------------------------------------------------------- e. the chain, when asked
def test_the_audit_list_does_not_walk_the_chain_and_walks_are_rate_limited(console, monkeypatch):
    from facegate.workflows.review import reports
    c = console
    walks = []
    walk = reports.chain_status
    monkeypatch.setattr(reports, "chain_status", lambda db: walks.append(1) or walk(db))
    for _ in range(3):
        r = call(c, "cy", "GET", "/console/api/audit", params={"limit": 200})
        assert r.status_code == 200 and "chain" not in r.json()
    assert walks == []
    for _ in range(2):
        r = call(c, "cy", "GET", "/console/api/audit", params={"verify": "true"})
        assert r.status_code == 200 and r.json()["chain"]["ok"] is True, r.text
    r = call(c, "di", "GET", "/console/api/audit", params={"verify": "true"})      # any operator: one bucket
    assert r.status_code == 429 and r.json()["code"] == "rate_limited", r.text
    assert 1 <= int(r.headers["retry-after"]) <= 30
    assert len(walks) == 2


# ---------------------------------------------------------------------------- f. ?sso= codes
def test_each_single_sign_on_code_has_a_sentence_in_both_languages():
    js = (CONSOLE / "console.js").read_text()
    table = re.search(r"const SSO_FAILURES = \{(.*?)\};", js, re.S).group(1)
    codes = dict(re.findall(r"(\w+): \"(\w+)\"", table))
    from facegate.errors import ERROR_CODES
    assert {"sign_in_failed", "forbidden", "not_ready"} <= set(codes)
    assert set(codes) <= set(ERROR_CODES) | {"sign_in_throttled", "sso_not_registered"}
    text = (CONSOLE / "i18n.js").read_text()
    en = text[text.index("const en = {"):text.index("const zh = {")]
    zh = text[text.index("const zh = {"):text.index("export const TEXTS")]
    for key in [*codes.values(), "ssoOther"]:
        assert re.search(rf"^\s+{key}:", en, re.M) and re.search(rf"^\s+{key}:", zh, re.M), key
