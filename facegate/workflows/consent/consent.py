"""The consent use cases: ask on the capture page, record at a counter or by CLI, withdraw.

Each is one write transaction (the record, its effect and its audit row), through
:mod:`facegate.storage.consents`, where the rules live. Withdrawal then drops the erased
templates from this process's 1:N index and rewrites its snapshot (other replicas follow the
change log), and on SQLite checkpoints the WAL so no byte of the erased rows stays on disk.
"""
from __future__ import annotations

import time

import sqlalchemy as sa

from facegate.errors import FacegateError
from facegate.storage import consents, notices
from facegate.storage.audit import Actor
from facegate.storage.db import write_transaction
from facegate.storage.schema import liveness_sessions


def notice_for_capture(db: sa.Engine, session_id: str, settings) -> dict:
    """What the capture page needs before the camera opens: whether consent is asked, the
    current notice (both languages) and what this session already answered."""
    notice = notices.current(db)
    with db.connect() as conn:
        state = consents.capture_consent_state(conn, session_id)
    return {"required": bool(settings.consent_required), "state": state,
            "notice": None if notice is None else {"version": notice["version"], "texts": notice["texts"]}}


def answer_on_capture(db: sa.Engine, settings, session_id: str, decision: str, notice_version: int,
                      who: Actor, owner: str | None = None) -> dict:
    """The person's answer on the capture page (channel ``capture_page``), for the session's
    purpose. Declined: the session closes with ``consent_declined`` (nothing is captured) and
    the answer carries the deployer's alternative in both languages."""
    with write_transaction(db) as conn:
        row = conn.execute(sa.select(liveness_sessions.c.purpose, liveness_sessions.c.owner,
                                     liveness_sessions.c.expires_at).where(liveness_sessions.c.id == session_id)).one_or_none()
        if row is None or (owner is not None and row.owner is not None and row.owner != owner):
            raise FacegateError("liveness_session_unknown")      # another key's session is not ours to answer
        if time.time() > row.expires_at:
            raise FacegateError("liveness_session_expired")
        purpose = row.purpose
        rec = consents.record(conn, purpose=consents.purpose_of(purpose, settings), notice_version=notice_version,
                              channel="capture_page", decision=decision, recorded_by=who.actor,
                              session_id=session_id, actor_fields=who.fields())
    out = {"consent": rec}
    if decision == "declined":
        notice = notices.current(db)
        out["alternative"] = {lang: texts["alternative"] for lang, texts in notice["texts"].items()}
    return out


def record_for_subject(db: sa.Engine, settings, subject_id: str, *, decision: str, channel: str, who: Actor,
                       purpose: str | None = None, notice_version: int | None = None,
                       guardian_name: str | None = None, guardian_relation: str | None = None) -> dict:
    """A consent given or declined at a counter, by the API or the CLI (``notice_version``:
    the version the person was shown; default the current one)."""
    with write_transaction(db) as conn:
        if notice_version is None:
            notice_version = notices.current_version(conn)
            if notice_version is None:
                raise FacegateError("notice_missing")
        return consents.record(conn, subject_id=subject_id, purpose=purpose or settings.default_purpose,
                               notice_version=notice_version, channel=channel, decision=decision,
                               recorded_by=who.actor, guardian_name=guardian_name,
                               guardian_relation=guardian_relation, actor_fields=who.fields())


def withdraw(gallery, subject_id: str, who: Actor, reason: str | None = None) -> dict:
    """Withdraw the subject's consent: their face information is erased physically (templates,
    second opinions, certification captures, live faces of their sessions), the audit and
    consent rows stay, and later decisions about them answer ``consent_withdrawn``."""
    store = gallery.store
    with write_transaction(store.db) as conn:
        out = consents.withdraw(conn, subject_id, who.fields(), reason)
    gallery.after_erasure()
    if store.backend == "sqlite":
        store.checkpoint()
    return out


def records(db: sa.Engine, subject_id: str) -> list[dict]:
    with db.connect() as conn:
        return consents.subject_records(conn, subject_id)
