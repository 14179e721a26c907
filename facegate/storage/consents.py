"""Consent records (单独同意) as rows, and the rules that read them.

A record says who consented (a subject, or the person in front of a liveness session's camera),
for which purpose (``vocab.PURPOSES``), to which notice version, through which channel
(``vocab.CONSENT_CHANNELS``), when, and who recorded it; a minor's record also names the
guardian and their relation. A declined consent is a record too.

The rules, each written once here and run inside the caller's write transaction (so a
withdrawal racing an enrolment or a capture leaves one of them whole, never half of both):

- :func:`require_enrolment`: a template is stored only for a subject with a given, unwithdrawn
  consent for the purpose, unless ``Settings.consent_legal_basis`` names a legal basis; a
  subject marked ``minor`` needs a guardian's record whatever the setting; a subject who
  withdrew answers ``consent_withdrawn`` until a new consent is recorded.
- :func:`require_capture`: a liveness capture stores frames only when a consent to the
  **current** notice version is recorded for that session (the capture page asks it);
  declined -> ``consent_declined``; a minor subject needs the guardian's record as well.
- :func:`withdraw`: every active record of the subject is marked withdrawn, and the person's
  face information is erased through :func:`facegate.storage.erasure.erase_face_data`.

With ``Settings.consent_required`` off (tests of other features) the two ``require_*`` rules
let everything through except a withdrawn subject.
"""
from __future__ import annotations

import json

import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.errors import FacegateError
from facegate.storage import audit
from facegate.storage.erasure import erase_face_data
from facegate.storage.notices import current_version
from facegate.storage.schema import alternatives_offered, consent_records, liveness_sessions, subjects
from facegate.vocab import CONSENT_CHANNELS, CONSENT_DECISIONS, GUARDIAN_RELATIONS, PURPOSES

MAX_NAME = 128


def purpose_of(value: str | None, settings) -> str:
    """A session's or request's purpose inside the vocabulary (else the deployment's default)."""
    return value if value in PURPOSES else settings.default_purpose


def _check(field: str, value, allowed) -> None:
    if value not in allowed:
        raise FacegateError("invalid_request", f"{field} must be one of {', '.join(allowed)}", field=field)


def _subject(conn, subject_id: str):
    row = conn.execute(sa.select(subjects).where(subjects.c.subject_id == subject_id)).one_or_none()
    if row is None:
        raise FacegateError("unknown_subject", f"no subject {subject_id!r} (never enrolled, or erased)",
                            subject_id=subject_id)
    return row


def record_out(row) -> dict:
    m = row._mapping
    return {"consent_id": int(m["id"]), "subject_id": m["subject_id"], "liveness_session_id": m["liveness_session_id"],
            "purpose": m["purpose"], "notice_version": int(m["notice_version"]), "channel": m["channel"],
            "decision": m["decision"], "recorded_by": m["recorded_by"],
            "guardian": ({"name": m["guardian_name"], "relation": m["guardian_relation"]}
                         if m["guardian_name"] else None),
            "recorded_at": iso(m["recorded_at"]), "withdrawn_at": iso(m["withdrawn_at"])}


def _active(purpose: str | None = None):
    q = sa.and_(consent_records.c.decision == "given", consent_records.c.withdrawn_at.is_(None))
    return q if purpose is None else sa.and_(q, consent_records.c.purpose == purpose)


def active_for_subject(conn, subject_id: str, purpose: str | None = None, guardian: bool = False):
    q = sa.select(consent_records).where(consent_records.c.subject_id == subject_id, _active(purpose))
    if guardian:
        q = q.where(consent_records.c.guardian_name.is_not(None))
    return conn.execute(q.order_by(consent_records.c.id.desc()).limit(1)).one_or_none()


def record(conn: sa.Connection, *, purpose: str, notice_version: int, channel: str, decision: str, recorded_by: str,
           subject_id: str | None = None, session_id: str | None = None, guardian_name: str | None = None,
           guardian_relation: str | None = None, actor_fields: dict | None = None) -> dict:
    """Record one consent (caller's write transaction), audited ``consent.record``."""
    _check("purpose", purpose, PURPOSES)
    _check("channel", channel, CONSENT_CHANNELS)
    _check("decision", decision, CONSENT_DECISIONS)
    if subject_id is None and session_id is None:
        raise FacegateError("invalid_request", "a consent names a subject_id or a liveness session", field="subject_id")
    if guardian_name is not None or guardian_relation is not None:
        guardian_name = (guardian_name or "").strip()
        if not guardian_name or len(guardian_name) > MAX_NAME:
            raise FacegateError("invalid_request", f"guardian_name must be 1-{MAX_NAME} characters",
                                field="guardian_name")
        _check("guardian_relation", guardian_relation, GUARDIAN_RELATIONS)
    if not recorded_by or len(recorded_by) > MAX_NAME:
        raise FacegateError("invalid_request", f"recorded_by must be 1-{MAX_NAME} characters", field="recorded_by")
    current = current_version(conn)
    if current is None:
        raise FacegateError("notice_missing")
    if int(notice_version) != current:
        raise FacegateError("notice_version_stale", f"the current notice is version {current}",
                            current_version=current, notice_version=int(notice_version))
    session = subj = None
    if session_id is not None:
        session = conn.execute(sa.select(liveness_sessions).where(liveness_sessions.c.id == session_id)).one_or_none()
        if session is None:
            raise FacegateError("liveness_session_unknown")
        if session.status != "pending":
            raise FacegateError("liveness_session_closed", f"the session is already {session.status}",
                                status=session.status)
        if subject_id is None:
            subject_id = session.subject_id
        elif session.subject_id not in (None, subject_id):
            raise FacegateError("invalid_request", "the session was opened for another subject", field="subject_id")
    if subject_id is not None:
        subj = _subject(conn, subject_id) if session is None else conn.execute(
            sa.select(subjects).where(subjects.c.subject_id == subject_id)).one_or_none()
    if subject_id is not None and subj is not None:
        if subj.minor and decision == "given" and guardian_name is None and session is None:
            raise FacegateError("guardian_consent_required", subject_id=subject_id)
        if decision == "given" and subj.withdrawn_at is not None and session is None:
            conn.execute(subjects.update().where(subjects.c.pk == subj.pk).values(withdrawn_at=None))
    now = utcnow()
    cid = conn.execute(consent_records.insert().values(
        subject_id=subject_id, liveness_session_id=session_id, purpose=purpose, notice_version=int(notice_version),
        channel=channel, decision=decision, recorded_by=recorded_by, guardian_name=guardian_name,
        guardian_relation=guardian_relation, recorded_at=now)).inserted_primary_key[0]
    if session is not None and decision == "declined":
        # nothing will be captured: the session is closed with the person's answer as its verdict
        conn.execute(liveness_sessions.update().where(liveness_sessions.c.id == session_id).values(
            status="failed", completed_at=now.timestamp(),
            result=json.dumps({"live": False, "score": 0.0, "reasons": ["consent_declined"], "actions": [],
                               "challenge": json.loads(session.challenge), "passive": {}})))
    if decision == "declined" and subject_id is not None and subj is not None:
        # declining is answered with the way without a face (the page and the counter say it): recorded,
        # so the certification lists show ``alternative_offered`` rather than ``overdue``
        offer_alternative(conn, subject_id, recorded_by, int(cid), None)
    fields = actor_fields or {"actor": recorded_by}
    audit.append(conn, **fields, operation="consent.record", outcome=decision, subject_id=subject_id,
                 detail={"consent_id": int(cid), "purpose": purpose, "notice_version": int(notice_version),
                         "channel": channel, "liveness_session_id": session_id,
                         "guardian_relation": guardian_relation})
    return record_out(conn.execute(sa.select(consent_records).where(consent_records.c.id == cid)).one())


def require_enrolment(conn: sa.Connection, subject_id: str, purpose: str, settings) -> dict:
    """What allows storing a template of the subject (see the module docstring); raises otherwise."""
    subj = _subject(conn, subject_id)
    given = active_for_subject(conn, subject_id, purpose)
    if subj.withdrawn_at is not None and given is None:
        raise FacegateError("consent_withdrawn", subject_id=subject_id)
    if subj.minor and active_for_subject(conn, subject_id, guardian=True) is None:
        raise FacegateError("guardian_consent_required", subject_id=subject_id)
    if given is not None:
        return {"consent_id": int(given.id), "purpose": purpose}
    if not settings.consent_required:
        return {"purpose": purpose, "consent": "not_required"}
    if settings.consent_legal_basis:
        return {"purpose": purpose, "legal_basis": settings.consent_legal_basis}
    raise FacegateError("consent_required", f"no consent for {purpose!r} is recorded for {subject_id!r}",
                        subject_id=subject_id, purpose=purpose)


def require_capture(conn: sa.Connection, session_row, settings) -> None:
    """Frames may be stored for this session (see the module docstring); raises otherwise."""
    if session_row.subject_id:
        subj = conn.execute(sa.select(subjects).where(subjects.c.subject_id == session_row.subject_id)).one_or_none()
        if subj is not None and subj.withdrawn_at is not None:
            raise FacegateError("consent_withdrawn", subject_id=session_row.subject_id)
        if subj is not None and subj.minor and active_for_subject(conn, subj.subject_id, guardian=True) is None:
            raise FacegateError("guardian_consent_required", subject_id=subj.subject_id)
    if not settings.consent_required:
        return
    rows = conn.execute(sa.select(consent_records).where(consent_records.c.liveness_session_id == session_row.id)
                        .order_by(consent_records.c.id.desc())).all()
    if rows and rows[0].decision == "declined":
        raise FacegateError("consent_declined")
    current = current_version(conn)
    if not any(r.decision == "given" and r.withdrawn_at is None and r.notice_version == current for r in rows):
        raise FacegateError("consent_required", "no consent to the current notice is recorded for this capture",
                            notice_version=current)


def capture_consent_state(conn: sa.Connection, session_id: str) -> str:
    """``given`` | ``declined`` | ``none`` for a session (for the capture page)."""
    row = conn.execute(sa.select(consent_records.c.decision, consent_records.c.notice_version)
                       .where(consent_records.c.liveness_session_id == session_id)
                       .order_by(consent_records.c.id.desc()).limit(1)).one_or_none()
    if row is None:
        return "none"
    if row.decision == "given" and row.notice_version != current_version(conn):
        return "none"
    return row.decision


def withdraw(conn: sa.Connection, subject_id: str, actor_fields: dict, reason: str | None = None) -> dict:
    """Withdraw all of the subject's consent and erase their face information (caller's write
    transaction); the consent and audit rows stay. Returns what was erased."""
    subj = _subject(conn, subject_id)
    now = utcnow()
    withdrawn = conn.execute(consent_records.update().where(consent_records.c.subject_id == subject_id, _active())
                             .values(withdrawn_at=now, withdrawn_by=actor_fields.get("actor"))).rowcount
    erased = erase_face_data(conn, subj.pk, subject_id)
    conn.execute(subjects.update().where(subjects.c.pk == subj.pk).values(withdrawn_at=now, updated_at=now))
    audit.append(conn, **actor_fields, operation="consent.withdraw", outcome="erased", subject_id=subject_id,
                 detail={"records_withdrawn": withdrawn, "erased": erased, "reason": reason})
    return {"subject_id": subject_id, "records_withdrawn": withdrawn, "erased": erased, "withdrawn_at": iso(now)}


def check_not_withdrawn(conn: sa.Connection, subject_id: str) -> None:
    """A decision about a subject who withdrew answers ``consent_withdrawn`` (not ``not_enrolled``)."""
    w = conn.execute(sa.select(subjects.c.withdrawn_at).where(subjects.c.subject_id == subject_id)).scalar()
    if w is not None:
        raise FacegateError("consent_withdrawn", subject_id=subject_id)


def subject_records(conn: sa.Connection, subject_id: str) -> list[dict]:
    _subject(conn, subject_id)
    return [record_out(r) for r in conn.execute(sa.select(consent_records).where(
        consent_records.c.subject_id == subject_id).order_by(consent_records.c.id))]


def offer_alternative(conn: sa.Connection, subject_id: str, offered_by: str, consent_id: int | None,
                      period: str | None) -> None:
    conn.execute(alternatives_offered.insert().values(subject_id=subject_id, consent_record_id=consent_id,
                                                      period=period, offered_by=offered_by, offered_at=utcnow()))
