"""Retention (最短必要): one rule per data class, and the purge that applies them.

``RULES`` is the registry: each data class of ``vocab.DATA_CLASSES`` has its rule written once
here (what it covers, the setting that sets its time with its default, the article it
serves), a ``due`` query counting what is past its time and a ``purge`` deleting one batch of
it. The purge (:func:`run`), the compliance report's backlog and ``facegate retention policy``
all read this registry.

The purge is

- **one at a time across replicas**: a lease row in ``retention_runs`` (taken in a write
  transaction; a run that died leaves a lease that expires after ``retention_lease_s``); the
  in-service loop also skips a run when another replica started one within
  ``retention_interval_s``;
- **crash-safe and idempotent**: each batch is one write transaction (the deletions and an
  audit row ``retention.purge`` with the class and count), chosen by what is due *now*, so a
  run killed with -9 keeps every committed batch, loses nothing that must stay, and the next
  run finishes the rest; running twice deletes nothing more;
- **audited with counts**: a ``retention.run`` row at the end with the counts per class.

Times: "now" is :func:`facegate.clock.utcnow` (a fixed clock in tests); the lease uses the
machine's real time (it guards processes, not data).
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.storage import audit
from facegate.storage.db import write_transaction
from facegate.storage.erasure import erase_face_data, holds_face_data
from facegate.storage.private import private_dir
from facegate.storage.schema import (audit_log, certification_captures, liveness_evidence, liveness_frames,
                                     liveness_sessions, operator_sessions, retention_runs, review_cases,
                                     review_evidence, store_info, subjects)
from facegate.vocab import DATA_CLASSES

log = logging.getLogger(__name__)

DAY = 86400.0
BATCH = 200
ARCHIVE_HEAD = audit.ARCHIVE_HEAD
_MONTHS = {"year": 12, "half": 6, "quarter": 3, "month": 1}


@dataclass(frozen=True)
class Rule:
    name: str                      # vocab.DATA_CLASSES
    what: str
    setting: str                   # the Settings field of its time
    unit: str                      # days | periods
    article: str                   # docs/compliance.md
    due: Callable | None           # (conn, now, settings) -> rows past their time
    purge: Callable | None         # (conn, now, settings, limit, ctx) -> rows deleted in this batch

    def keep(self, settings) -> float:
        return float(getattr(settings, self.setting))


# ---------------------------------------------------------------- liveness frames and sessions
def _frames_q(now: datetime, settings):
    cut = now.timestamp() - settings.retention_liveness_frames_days * DAY
    judged = sa.select(liveness_sessions.c.id).where(sa.or_(liveness_sessions.c.status != "pending",
                                                             liveness_sessions.c.expires_at < cut))
    return liveness_frames.c.session_id.in_(judged)


def _frames_due(conn, now, settings) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(liveness_frames).where(_frames_q(now, settings))).scalar_one()


def _frames_purge(conn, now, settings, limit, ctx) -> int:
    ids = sa.select(liveness_frames.c.id).where(_frames_q(now, settings)).limit(limit)
    return conn.execute(liveness_frames.delete().where(liveness_frames.c.id.in_(ids.scalar_subquery()))).rowcount


def _sessions_q(now: datetime, settings):
    cut = now.timestamp() - settings.retention_liveness_sessions_days * DAY
    s = liveness_sessions.c
    return sa.and_(s.expires_at < cut, sa.or_(s.valid_until.is_(None), s.valid_until < cut))


def _sessions_due(conn, now, settings) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(liveness_sessions).where(_sessions_q(now, settings))).scalar_one()


def _sessions_purge(conn, now, settings, limit, ctx) -> int:
    ids = [r for r in conn.execute(sa.select(liveness_sessions.c.id).where(_sessions_q(now, settings)).limit(limit)).scalars()]
    if not ids:
        return 0
    conn.execute(liveness_frames.delete().where(liveness_frames.c.session_id.in_(ids)))
    conn.execute(liveness_evidence.delete().where(liveness_evidence.c.session_id.in_(ids)))
    return conn.execute(liveness_sessions.delete().where(liveness_sessions.c.id.in_(ids))).rowcount


# ---------------------------------------------------------------- face data of the withdrawn and the deceased
def _people_q(now: datetime, settings, kind: str):
    if kind == "withdrawn":
        cond = subjects.c.withdrawn_at < now - timedelta(days=settings.retention_withdrawn_days)
    else:
        cond = sa.and_(subjects.c.status == "deceased",
                       sa.func.coalesce(subjects.c.status_since, subjects.c.updated_at)
                       < now - timedelta(days=settings.retention_deceased_days))
    held = holds_face_data(subjects.c.pk, subjects.c.subject_id)
    return sa.select(subjects.c.pk, subjects.c.subject_id).where(cond, held)


def _people_due(kind):
    def due(conn, now, settings) -> int:
        return conn.execute(sa.select(sa.func.count()).select_from(_people_q(now, settings, kind).subquery())).scalar_one()
    return due


def _people_purge(kind):
    def purge(conn, now, settings, limit, ctx) -> int:
        n = 0
        for pk, sid in conn.execute(_people_q(now, settings, kind).limit(max(1, limit // 4))).all():
            erased = erase_face_data(conn, pk, sid)
            audit.append(conn, actor="retention", operation="retention.erase", outcome="erased", subject_id=sid,
                         detail={"data_class": f"{kind}_face_data", "erased": erased})
            n += sum(erased.values())
        return n
    return purge


# ---------------------------------------------------------------- certification captures: N periods
def _period_cutoff(now: datetime, kind: str, periods: int) -> datetime:
    """The start of the oldest period kept: the current one and the ``periods - 1`` before it."""
    span = _MONTHS[kind]
    first = ((now.month - 1) // span) * span + 1
    total = now.year * 12 + (first - 1) - span * max(0, int(periods) - 1)
    return datetime(total // 12, total % 12 + 1, 1, tzinfo=timezone.utc)


def _captures_q(now, settings):
    return certification_captures.c.created_at < _period_cutoff(now, settings.cert_period,
                                                                 settings.retention_certification_periods)


def _captures_due(conn, now, settings) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(certification_captures).where(
        _captures_q(now, settings))).scalar_one()


def _captures_purge(conn, now, settings, limit, ctx) -> int:
    ids = sa.select(certification_captures.c.certification_id).where(_captures_q(now, settings)).limit(limit)
    return conn.execute(certification_captures.delete().where(
        certification_captures.c.certification_id.in_(ids.scalar_subquery()))).rowcount


# ---------------------------------------------------------------- the console: decided cases' evidence, ended sessions
def _evidence_q(now: datetime, settings):
    c = review_cases.c
    decided = sa.select(c.id).where(c.status == "decided", c.decided_at.is_not(None),
                                    c.decided_at < now - timedelta(days=settings.retention_decision_evidence_days))
    return review_evidence.c.case_id.in_(decided)


def _evidence_due(conn, now, settings) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(review_evidence).where(
        _evidence_q(now, settings))).scalar_one()


def _evidence_purge(conn, now, settings, limit, ctx) -> int:
    ids = sa.select(review_evidence.c.id).where(_evidence_q(now, settings)).limit(limit)
    return conn.execute(review_evidence.delete().where(review_evidence.c.id.in_(ids.scalar_subquery()))).rowcount


def _op_sessions_q(now: datetime, settings):
    s = operator_sessions.c
    return sa.func.coalesce(s.ended_at, s.expires_at) < now - timedelta(days=settings.retention_operator_sessions_days)


def _op_sessions_due(conn, now, settings) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(operator_sessions).where(
        _op_sessions_q(now, settings))).scalar_one()


def _op_sessions_purge(conn, now, settings, limit, ctx) -> int:
    ids = sa.select(operator_sessions.c.id_hash).where(_op_sessions_q(now, settings)).limit(limit)
    return conn.execute(operator_sessions.delete().where(
        operator_sessions.c.id_hash.in_(ids.scalar_subquery()))).rowcount


# ---------------------------------------------------------------- audit rows: archived with the chain's head
def _audit_cut(now, settings) -> str:
    return (now - timedelta(days=settings.retention_audit_days)).isoformat(timespec="microseconds")


def _audit_due(conn, now, settings) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(audit_log).where(
        audit_log.c.ts < _audit_cut(now, settings))).scalar_one()


def archive_head(conn) -> dict | None:
    raw = conn.execute(sa.select(store_info.c.value).where(store_info.c.name == ARCHIVE_HEAD)).scalar()
    return json.loads(raw) if raw else None


def _audit_purge(conn, now, settings, limit, ctx) -> int:
    """Write the oldest due rows to ``<data_dir>/archive/audit-<first>-<last>.jsonl`` (0600,
    fsynced before the delete commits), keep the last archived row's ``seq`` and ``hash`` as
    the archive head (``audit.verify`` starts the chain there), delete them."""
    rows = conn.execute(sa.select(audit_log).where(audit_log.c.ts < _audit_cut(now, settings),
                                                   audit_log.c.seq <= ctx["audit_seq"])
                        .order_by(audit_log.c.seq).limit(limit)).mappings().all()
    if not rows:
        return 0
    folder = private_dir(Path(settings.data_dir) / "archive")
    path = folder / f"audit-{rows[0]['seq']:012d}-{rows[-1]['seq']:012d}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(dict(r), ensure_ascii=False, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    head = json.dumps({"seq": int(rows[-1]["seq"]), "hash": rows[-1]["hash"], "file": path.name})
    conn.execute(store_info.delete().where(store_info.c.name == ARCHIVE_HEAD))
    conn.execute(store_info.insert().values(name=ARCHIVE_HEAD, value=head))
    return conn.execute(audit_log.delete().where(audit_log.c.seq <= rows[-1]["seq"])).rowcount


RULES: tuple[Rule, ...] = (
    Rule("liveness_frames", "frames of a liveness capture (deleted when judged; leftovers of expired captures)",
         "retention_liveness_frames_days", "days", "Art. 7 (shortest necessary)", _frames_due, _frames_purge),
    Rule("liveness_sessions", "liveness session rows and the live face's embedding, after expiry",
         "retention_liveness_sessions_days", "days", "Art. 7", _sessions_due, _sessions_purge),
    Rule("withdrawn_face_data", "any face information left of subjects who withdrew consent (erased at withdrawal)",
         "retention_withdrawn_days", "days", "Art. 6 (withdrawal), PIPL Art. 47", _people_due("withdrawn"),
         _people_purge("withdrawn")),
    Rule("deceased_face_data", "templates, second opinions, captures of subjects marked deceased",
         "retention_deceased_days", "days", "Art. 7, PIPL Art. 47", _people_due("deceased"),
         _people_purge("deceased")),
    Rule("certification_captures", "embeddings of certification captures (the shared-face check)",
         "retention_certification_periods", "periods", "Art. 7", _captures_due, _captures_purge),
    Rule("decision_evidence", "frames a reviewed case's decision rested on, after a person decided (console)",
         "retention_decision_evidence_days", "days", "Art. 7", _evidence_due, _evidence_purge),
    Rule("operator_sessions", "operator console sessions after they ended or expired (console)",
         "retention_operator_sessions_days", "days", "Art. 7", _op_sessions_due, _op_sessions_purge),
    Rule("audit_rows", "audit rows, archived to the data folder with the chain's head",
         "retention_audit_days", "days", "PIPL Art. 56 (records kept at least 3 years)", _audit_due, _audit_purge),
)
assert tuple(r.name for r in RULES) == DATA_CLASSES, "every data class has one rule"


def policy(settings) -> list[dict]:
    return [{"data_class": r.name, "what": r.what, "keep": r.keep(settings), "unit": r.unit,
             "setting": f"FACEGATE_{r.setting.upper()}", "article": r.article,
             "in_force": r.purge is not None} for r in RULES]


def backlog(conn, settings, now: datetime | None = None) -> dict[str, int | None]:
    now = now or utcnow()
    return {r.name: (None if r.due is None else int(r.due(conn, now, settings))) for r in RULES}


# ---------------------------------------------------------------- the lease and the run
def _real_now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t: datetime | None) -> datetime | None:
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=timezone.utc))


def acquire(db: sa.Engine, holder: str, lease_s: float, interval_s: float | None = None) -> bool:
    """Take the purge lease unless another holder has it (or, with ``interval_s``, unless a run
    started within it: one purge per interval across replicas)."""
    now = _real_now()
    with db.connect() as conn:      # the usual answer (another replica ran this interval) without the write lock
        row = conn.execute(sa.select(retention_runs).where(retention_runs.c.name == "purge")).one_or_none()
    if row is not None and interval_s and _aware(row.last_started_at) is not None \
            and _aware(row.last_started_at) + timedelta(seconds=interval_s) > now:
        return False
    with write_transaction(db) as conn:
        row = conn.execute(sa.select(retention_runs).where(retention_runs.c.name == "purge")).one_or_none()
        if row is None:
            conn.execute(retention_runs.insert().values(name="purge"))
        else:
            until, started = _aware(row.lease_until), _aware(row.last_started_at)
            if until is not None and until > now and row.holder != holder:
                return False
            if interval_s and started is not None and started + timedelta(seconds=interval_s) > now:
                return False
        conn.execute(retention_runs.update().where(retention_runs.c.name == "purge").values(
            holder=holder, lease_until=now + timedelta(seconds=lease_s), last_started_at=now))
    return True


def release(db: sa.Engine, holder: str, counts: dict) -> None:
    with write_transaction(db) as conn:
        conn.execute(retention_runs.update().where(retention_runs.c.name == "purge", retention_runs.c.holder == holder)
                     .values(lease_until=_real_now(), last_finished_at=_real_now(), last_counts=json.dumps(counts)))


def run(store, holder: str | None = None, dry_run: bool = False, actor: str = "retention",
        interval_s: float | None = None, batch: int = BATCH) -> dict:
    """Purge every data class of what is due now. Returns ``{"ran", "counts", "backlog"}``;
    ``ran`` False when another replica holds the lease (or ran within ``interval_s``)."""
    settings, db = store.settings, store.db
    now = utcnow()
    if dry_run:
        with db.connect() as conn:
            return {"ran": False, "dry_run": True, "now": iso(now), "due": backlog(conn, settings, now)}
    holder = holder or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not acquire(db, holder, settings.retention_lease_s, interval_s):
        return {"ran": False, "now": iso(now), "reason": "another purge holds the lease or ran within the interval"}
    counts: dict[str, int] = {}
    with db.connect() as conn:       # audit rows written by this run are never its own backlog
        ctx = {"store": store, "audit_seq": conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit_log.c.seq), 0))).scalar_one()}
    try:
        for rule in RULES:
            if rule.purge is None:
                continue
            total = 0
            while True:
                with write_transaction(db) as conn:
                    n = int(rule.purge(conn, now, settings, batch, ctx))
                    if n:
                        audit.append(conn, actor=actor, operation="retention.purge", outcome="ok",
                                     detail={"data_class": rule.name, "count": n, "now": iso(now)})
                total += n
                if n == 0:
                    break
            counts[rule.name] = total
        if store.backend == "sqlite" and any(counts.values()):
            store.checkpoint()
        with write_transaction(db) as conn:
            audit.append(conn, actor=actor, operation="retention.run", outcome="ok",
                         detail={"counts": counts, "now": iso(now), "holder": holder})
    finally:
        release(db, holder, counts)
    if counts.get("deceased_face_data") or counts.get("withdrawn_face_data"):
        log.info("retention erased face data: %s", counts)
    return {"ran": True, "now": iso(now), "counts": counts}
