"""The certification ledger: recording attempts, deriving statuses, raising fraud signals.

An attempt is judged in this order, and every attempt is recorded and audited:

1. the subject must be ``active``: a ``deceased`` subject's attempt fails and raises a
   ``deceased_subject`` signal (someone is trying to keep a dead person's pension), a
   ``suspended`` one fails;
2. after ``cert_max_failures`` failed attempts within ``cert_failure_window_h`` hours the subject
   is locked to ``manual_review`` (signal ``repeated_failures``);
3. the liveness session must have passed (else ``failed`` + signal ``liveness_failed``);
4. the live face must match the subject's enrolled template at the operating point
   (``match`` -> certified, a weak or near-threshold match -> ``manual_review``);
5. the live face is searched across the gallery and across this period's other certification
   captures: the same face for another subject raises ``shared_face`` and sends the attempt
   to ``manual_review`` — one person certifying for several pensioners is the fraud to stop.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.errors import FacegateError
from facegate.liveness.service import LivenessProof
from facegate.matching.decisions import ReviewRules, decide_1to1
from facegate.storage import audit, consents
from facegate.storage.aad import capture_aad
from facegate.storage.audit import Actor
from facegate.storage.db import write_transaction
from facegate.storage.schema import (alternatives_offered, certification_captures, certifications, fraud_signals,
                                     subjects)
from facegate.vocab import ALTERNATIVE_METHODS, CERT_STATUSES, MANUAL_OUTCOMES, SIGNAL_KINDS
from facegate.workflows.certification.periods import Period, parse_period, period_at

log = logging.getLogger(__name__)

OUTCOME_OF_DECISION = {"match": "certified", "no_match": "failed", "manual_review": "manual_review"}


class CaptureIndex:
    """This period's certification captures in memory, caught up from the database by id.

    Rows are only added, except by erasure: catching up is ``WHERE certification_id >
    last_seen``, and a period change or fewer rows than held (an erasure) starts over.
    """

    def __init__(self, store, pack_id: str):
        self.store = store
        self.pack_id = pack_id
        self.period: str | None = None
        self.last_id = 0
        self.ids: list[int] = []
        self.subjects: list[str] = []
        self.vectors = np.empty((0, 0), np.float32)
        self._lock = threading.Lock()

    def _catch_up(self, period: str) -> None:
        c = certification_captures
        if self.period == period and self.ids:
            with self.store.db.connect() as conn:     # an erasure removed rows: start over
                held = conn.execute(sa.select(sa.func.count()).select_from(c).where(
                    c.c.period == period, c.c.pack_id == self.pack_id, c.c.certification_id <= self.last_id)).scalar_one()
            if held != len(self.ids):
                self.period = None
        if self.period != period:
            self.period, self.last_id, self.ids, self.subjects = period, 0, [], []
            self.vectors = np.empty((0, 0), np.float32)
        q = (sa.select(c.c.certification_id, c.c.embedding_enc, c.c.key_id, subjects.c.subject_id)
             .join(subjects, subjects.c.pk == c.c.subject_pk)
             .where(c.c.period == period, c.c.pack_id == self.pack_id, c.c.certification_id > self.last_id)
             .order_by(c.c.certification_id))
        with self.store.db.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return
        new = []
        for cid, blob, kid, sid in rows:
            raw = self.store.keys.decrypt(blob, kid, capture_aad(sid, self.pack_id))
            new.append(np.frombuffer(raw, np.float32))
            self.ids.append(cid)
            self.subjects.append(sid)
        block = np.stack(new)
        self.vectors = block if self.vectors.size == 0 else np.vstack([self.vectors, block])
        self.last_id = rows[-1][0]

    def search(self, period: str, embedding: np.ndarray, exclude_subject: str) -> list[tuple[str, float, int]]:
        """(subject_id, score, certification_id) of other subjects' captures, best first."""
        with self._lock:
            self._catch_up(period)
            if not self.ids:
                return []
            scores = self.vectors @ embedding.astype(np.float32)
            best: dict[str, tuple[float, int]] = {}
            for i in np.argsort(-scores)[:50]:
                sid = self.subjects[i]
                if sid != exclude_subject and sid not in best:
                    best[sid] = (float(scores[i]), self.ids[i])
        return sorted(((s, v[0], v[1]) for s, v in best.items()), key=lambda r: -r[1])


class CertificationLedger:
    """Certification records in the gallery's database. Judging attempts needs the engine and
    the gallery; the lists and manual decisions need only the store."""

    def __init__(self, settings, store, engine=None, gallery=None):
        self.settings = settings
        self.store = store
        self.db = store.db
        self.engine = engine
        self.gallery = gallery
        self.captures = CaptureIndex(store, engine.pack_id) if engine is not None else None

    # ---------------------------------------------------------------- periods
    def current_period(self, now: datetime | None = None) -> Period:
        return period_at(now or utcnow(), self.settings.cert_period)

    def _subject(self, conn, subject_id: str):
        row = conn.execute(sa.select(subjects.c.pk, subjects.c.status).where(subjects.c.subject_id == subject_id)).first()
        if row is None:
            raise FacegateError("unknown_subject", f"no subject {subject_id!r}", subject_id=subject_id)
        return row

    def _recent_failures(self, conn, subject_pk: int, now: datetime) -> int:
        since = now - timedelta(hours=self.settings.cert_failure_window_h)
        return conn.execute(sa.select(sa.func.count()).select_from(certifications).where(
            certifications.c.subject_pk == subject_pk, certifications.c.outcome == "failed",
            certifications.c.method == "face", certifications.c.created_at >= since)).scalar_one()

    # ---------------------------------------------------------------- attempts
    def attempt(self, subject_id: str, embedding: np.ndarray | None, liveness: LivenessProof | None,
                quality: float | None = None, *, who: Actor, decision_id: str | None = None,
                review_reasons: tuple[str, ...] = (), also=None) -> dict:
        """Judge and record one face certification attempt (see the module docstring).
        ``review_reasons``: more reasons for a person to decide (e.g. ``capture_face_mismatch``).
        ``also(conn, answer)`` runs inside the attempt's write transaction with the answer (the
        review desk opens a case there, with its evidence): whatever it raises leaves nothing written."""
        now = utcnow()
        period = self.current_period(now)
        with self.db.connect() as conn:
            subject_pk, status = self._subject(conn, subject_id)
            consents.check_not_withdrawn(conn, subject_id)     # the way without a face remains (alternative)
            failures = self._recent_failures(conn, subject_pk, now)
        reasons: list[str] = []
        signals: list[dict] = []
        outcome, match = None, None
        if status == "deceased":
            outcome, reasons = "failed", ["subject_deceased"]
            signals.append({"kind": "deceased_subject"})
        elif status != "active":
            outcome, reasons = "failed", [f"subject_{status}"]
        elif failures >= self.settings.cert_max_failures:
            outcome, reasons = "manual_review", ["locked_after_failures"]
        elif liveness is None or not liveness.passed:
            outcome, reasons = "failed", ["liveness_failed"]
            signals.append({"kind": "liveness_failed",
                            "detail": {"checks": list(liveness.checks) if liveness else []}})
        elif liveness.subject_id not in (None, subject_id):
            outcome, reasons = "failed", ["liveness_other_subject"]
        elif embedding is None:
            raise FacegateError("invalid_request", "the capture has no face embedding")
        else:
            verified = self.gallery.verify(subject_id, embedding, quality=quality)
            decision = decide_1to1(verified.score, verified.point, 1.0 if quality is None else quality,
                                   ReviewRules.from_settings(self.settings)).under_review(*review_reasons)
            match = decision.as_dict()
            outcome = OUTCOME_OF_DECISION[decision.decision]
            reasons = list(decision.reasons) + (["face_mismatch"] if outcome == "failed" else [])
            for cand in self.gallery.identify(embedding, top_k=5, quality=quality).candidates:
                if cand.subject_id != subject_id and verified.point.matches(cand.score):
                    signals.append({"kind": "shared_face", "other_subject_id": cand.subject_id,
                                    "detail": {"score": round(cand.score, 6), "where": "gallery"}})
            for other, score, cert_id in self.captures.search(period.name, embedding, subject_id):
                if not verified.point.matches(score):
                    break
                signals.append({"kind": "shared_face", "other_subject_id": other,
                                "detail": {"score": round(score, 6), "where": "certification_capture",
                                           "certification_id": cert_id}})
            if any(s["kind"] == "shared_face" for s in signals) and outcome == "certified":
                outcome = "manual_review"
                reasons.append("shared_face")
        if outcome == "failed" and failures + 1 == self.settings.cert_max_failures:
            signals.append({"kind": "repeated_failures", "detail": {"failures": failures + 1,
                                                                     "window_h": self.settings.cert_failure_window_h}})

        row = {"subject_pk": subject_pk, "period": period.name, "outcome": outcome, "method": "face",
               "valid_until": period.end if outcome == "certified" else None,
               "score": match["score"] if match else None, "threshold": match["threshold"] if match else None,
               "fmr": match["fmr"] if match else None,
               "liveness_session_id": liveness.session_id if liveness else None, "reasons": json.dumps(reasons),
               "key_id": who.key_id, "client_id": who.client_id, "decision_id": decision_id, "created_at": now}
        keep_capture = embedding is not None and outcome in ("certified", "manual_review")
        with write_transaction(self.db) as conn:
            cert_id = conn.execute(certifications.insert().values(**row)).inserted_primary_key[0]
            if keep_capture:
                blob, kid = self.store.keys.encrypt(np.asarray(embedding, np.float32).tobytes(),
                                                    capture_aad(subject_id, self.engine.pack_id))
                conn.execute(certification_captures.insert().values(
                    certification_id=cert_id, subject_pk=subject_pk, period=period.name,
                    pack_id=self.engine.pack_id, embedding_enc=blob, key_id=kid, created_at=now))
            for s in signals:
                conn.execute(fraud_signals.insert().values(
                    kind=s["kind"], subject_id=subject_id, other_subject_id=s.get("other_subject_id"),
                    certification_id=cert_id, period=period.name, detail=json.dumps(s.get("detail") or {}),
                    created_at=now))
            audit.append(conn, **who.fields(), operation="certify", outcome=outcome, subject_id=subject_id,
                         scores={k: match[k] for k in ("score", "threshold", "fmr")} if match else None,
                         detail={"certification_id": cert_id, "period": period.name, "reasons": reasons,
                                 "decision_id": decision_id, "liveness_session_id": row["liveness_session_id"],
                                 "signals": [s["kind"] for s in signals]})
            answer = self._answer(cert_id, subject_id, row, reasons, signals)
            if also is not None:
                seen = answer | {"subject_pk": subject_pk, "quality": quality}
                also(conn, seen)
                if seen.get("review_case_id") is not None:
                    answer["review_case_id"] = seen["review_case_id"]
        return answer

    def manual(self, subject_id: str, outcome: str, note: str, *, who: Actor, operator: str | None = None,
               also=None) -> dict:
        """An operator's decision after an in-person or other check (recorded as such).
        ``operator``: the console operator who decided (recorded on the row); ``also(conn,
        certification_id)`` runs inside the write transaction (the review desk closes its case
        there): whatever it raises leaves nothing written."""
        if outcome not in MANUAL_OUTCOMES:
            raise FacegateError("invalid_request", "a manual decision is 'certified' or 'failed'", field="outcome")
        if not note or not note.strip():
            raise FacegateError("invalid_request", "a manual decision needs a note saying how the person was checked",
                                field="note")
        detail = {"operator": operator} if operator else {}
        return self._person_decided(subject_id, outcome, note.strip()[:2000], who, "certify_manual",
                                    {"operator": operator}, detail, also)

    def _person_decided(self, subject_id: str, outcome: str, note: str, who: Actor, operation: str,
                        columns: dict, detail: dict, also=None) -> dict:
        """Record a decision a person made (the console's, or a way without a face): its row and
        audit row in one transaction, ``also(conn, certification_id)`` inside it."""
        now = utcnow()
        period = self.current_period(now)
        with self.db.connect() as conn:
            subject_pk, status = self._subject(conn, subject_id)
        if status == "deceased" and outcome == "certified":
            raise FacegateError("invalid_request", "a deceased subject cannot be certified; change the status first",
                                subject_status=status)
        row = {"subject_pk": subject_pk, "period": period.name, "outcome": outcome, "method": "manual",
               "valid_until": period.end if outcome == "certified" else None, "reasons": json.dumps([]),
               "note": note, "key_id": who.key_id, "client_id": who.client_id, "created_at": now} | columns
        with write_transaction(self.db) as conn:
            if conn.execute(sa.select(subjects.c.pk).where(subjects.c.pk == subject_pk)).scalar() is None:
                raise FacegateError("unknown_subject", f"no subject {subject_id!r} (erased meanwhile)",
                                    subject_id=subject_id)
            cert_id = conn.execute(certifications.insert().values(**row)).inserted_primary_key[0]
            if also is not None:
                also(conn, cert_id)
            audit.append(conn, **who.fields(), operation=operation, outcome=outcome, subject_id=subject_id,
                         detail={"certification_id": cert_id, "period": period.name, "note": note} | detail)
        return self._answer(cert_id, subject_id, row, [], [])

    def alternative(self, subject_id: str, method: str, checked_by: str, note: str, *, who: Actor,
                    outcome: str = "certified") -> dict:
        """A certification by a way without a face (不得作为唯一方式): ``method`` is one of
        ``vocab.ALTERNATIVE_METHODS`` (counter, home_visit, video_call, document), ``checked_by`` the
        person who checked, ``note`` how. A first-class outcome: the lists count it by method.
        Allowed for a subject who declined or withdrew consent (that is what it is for)."""
        if method not in ALTERNATIVE_METHODS:
            raise FacegateError("invalid_request", f"method must be one of {', '.join(ALTERNATIVE_METHODS)}",
                                field="method")
        if outcome not in MANUAL_OUTCOMES:
            raise FacegateError("invalid_request", "an alternative check's outcome is 'certified' or 'failed'",
                                field="outcome")
        checked_by = (checked_by or "").strip()
        if not checked_by or len(checked_by) > 128:
            raise FacegateError("invalid_request", "checked_by (who checked the person) must be 1-128 characters",
                                field="checked_by")
        if not note or not note.strip() or len(note) > 2000:
            raise FacegateError("invalid_request", "note (how the person was checked) must be 1-2000 characters",
                                field="note")
        return self._person_decided(subject_id, outcome, note.strip(), who, "certify_alternative",
                                    {"alternative": method, "checked_by": checked_by},
                                    {"method": method, "checked_by": checked_by})

    def offer_alternative(self, subject_id: str, *, who: Actor) -> dict:
        """Record that the way without a face was offered to the subject in this period (a person
        who declines on the capture page or at the counter gets this row with their record)."""
        now = utcnow()
        period = self.current_period(now)
        with write_transaction(self.db) as conn:
            self._subject(conn, subject_id)
            consents.offer_alternative(conn, subject_id, who.actor, None, period.name)
            audit.append(conn, **who.fields(), operation="alternative.offer", outcome="ok", subject_id=subject_id,
                         detail={"period": period.name})
        return {"subject_id": subject_id, "period": period.name, "offered_at": iso(now)}

    @staticmethod
    def _answer(cert_id, subject_id, row, reasons, signals) -> dict:
        return {"certification_id": cert_id, "subject_id": subject_id, "period": row["period"],
                "outcome": row["outcome"], "method": row["method"], "alternative": row.get("alternative"),
                "checked_by": row.get("checked_by"), "valid_until": iso(row["valid_until"]),
                "score": row.get("score"), "threshold": row.get("threshold"), "fmr": row.get("fmr"),
                "reasons": reasons, "fraud_signals": [s["kind"] for s in signals],
                "liveness_session_id": row.get("liveness_session_id"), "created_at": iso(row["created_at"]),
                "operator": row.get("operator")}

    # ---------------------------------------------------------------- lists
    def statuses(self, period: str | None = None, status: str | None = None, as_of: datetime | None = None,
                 limit: int = 100, offset: int = 0, include_inactive: bool = False) -> dict:
        """Each subject's status for ``period`` (default: the current one) as of ``as_of``.

        The status rule, written once (the ``CASE`` below): ``certified`` once any attempt
        certified (face or manual); ``manual_review`` while the last attempt waits for an
        operator, even past the deadline; ``alternative_offered`` when the person was offered the
        way without a face in the period (they declined the face check: not ``overdue`` for
        that); otherwise ``overdue`` once the period plus
        ``cert_grace_days`` has ended, else ``failed`` after a failed attempt, else ``due``."""
        as_of = as_of or utcnow()
        p = parse_period(period) if period else self.current_period(as_of)
        if status is not None and status not in CERT_STATUSES:
            raise FacegateError("invalid_request", f"status must be one of {CERT_STATUSES}", field="status")
        c = certifications
        in_period = c.c.period == p.name
        if as_of < p.end:
            in_period = sa.and_(in_period, c.c.created_at <= as_of)
        agg = (sa.select(c.c.subject_pk,
                         sa.func.max(sa.case((c.c.outcome == "certified", c.c.id), else_=None)).label("cert_id"),
                         sa.func.max(c.c.id).label("last_id"), sa.func.count().label("attempts"))
               .where(in_period).group_by(c.c.subject_pk).subquery())
        cert, last = c.alias("cert"), c.alias("last")
        past = as_of >= p.end + timedelta(days=self.settings.cert_grace_days)
        offered = (sa.select(alternatives_offered.c.subject_id)
                   .where(alternatives_offered.c.offered_at >= p.start,
                          alternatives_offered.c.offered_at <= min(as_of, p.end)).distinct().subquery())
        derived = sa.case(
            (agg.c.cert_id.is_not(None), "certified"),
            (last.c.outcome == "manual_review", "manual_review"),
            (offered.c.subject_id.is_not(None), "alternative_offered"),
            *([(sa.true(), "overdue")] if past else []),
            (last.c.outcome == "failed", "failed"),
            else_="due").label("status")
        q = (sa.select(subjects.c.subject_id, subjects.c.name, subjects.c.status.label("subject_status"), derived,
                       cert.c.created_at.label("certified_at"),
                       sa.func.coalesce(cert.c.alternative, cert.c.method).label("certified_by"),
                       cert.c.valid_until, agg.c.attempts, last.c.outcome.label("last_outcome"),
                       last.c.created_at.label("last_attempt_at"))
             .select_from(subjects.outerjoin(agg, agg.c.subject_pk == subjects.c.pk)
                          .outerjoin(cert, cert.c.id == agg.c.cert_id)
                          .outerjoin(last, last.c.id == agg.c.last_id)
                          .outerjoin(offered, offered.c.subject_id == subjects.c.subject_id)))
        if not include_inactive:
            q = q.where(subjects.c.status == "active")
        inner = q.subquery()
        counts_q = sa.select(inner.c.status, sa.func.count()).group_by(inner.c.status)
        by_method_q = (sa.select(inner.c.certified_by, sa.func.count()).where(inner.c.certified_by.is_not(None))
                       .group_by(inner.c.certified_by))
        rows_q = sa.select(inner)
        if status:
            rows_q = rows_q.where(inner.c.status == status)
        rows_q = rows_q.order_by(inner.c.subject_id).limit(limit).offset(offset)
        with self.db.connect() as conn:
            counts = {s: 0 for s in CERT_STATUSES} | dict(conn.execute(counts_q).all())
            by_method = {m: 0 for m in ("face", "manual", *ALTERNATIVE_METHODS)} | dict(conn.execute(by_method_q).all())
            rows = conn.execute(rows_q).all()
        items = [{"subject_id": r.subject_id, "name": r.name, "status": r.status, "subject_status": r.subject_status,
                  "certified_at": iso(r.certified_at), "certified_by": r.certified_by,
                  "valid_until": iso(r.valid_until), "attempts": r.attempts or 0,
                  "last_outcome": r.last_outcome, "last_attempt_at": iso(r.last_attempt_at)} for r in rows]
        return {"period": p.name, "period_start": iso(p.start), "period_end": iso(p.end), "as_of": iso(as_of),
                "counts": counts, "certified_by": by_method, "items": items, "limit": limit, "offset": offset}

    def signals(self, kind: str | None = None, subject_id: str | None = None, period: str | None = None,
                limit: int = 100, offset: int = 0) -> list[dict]:
        f = fraud_signals
        q = sa.select(f).order_by(f.c.id.desc()).limit(limit).offset(offset)
        if kind:
            if kind not in SIGNAL_KINDS:
                raise FacegateError("invalid_request", f"kind must be one of {SIGNAL_KINDS}", field="kind")
            q = q.where(f.c.kind == kind)
        if subject_id:
            q = q.where(sa.or_(f.c.subject_id == subject_id, f.c.other_subject_id == subject_id))
        if period:
            q = q.where(f.c.period == period)
        with self.db.connect() as conn:
            return [{"id": r.id, "kind": r.kind, "subject_id": r.subject_id, "other_subject_id": r.other_subject_id,
                     "certification_id": r.certification_id, "period": r.period,
                     "detail": json.loads(r.detail or "{}"), "created_at": iso(r.created_at)}
                    for r in conn.execute(q).all()]

    def attempts(self, subject_id: str, limit: int = 50) -> list[dict]:
        c = certifications
        q = (sa.select(c).join(subjects, subjects.c.pk == c.c.subject_pk)
             .where(subjects.c.subject_id == subject_id).order_by(c.c.id.desc()).limit(limit))
        with self.db.connect() as conn:
            self._subject(conn, subject_id)
            return [{"certification_id": r.id, "period": r.period, "outcome": r.outcome, "method": r.method,
                     "valid_until": iso(r.valid_until), "score": r.score, "reasons": json.loads(r.reasons or "[]"),
                     "note": r.note, "operator": r.operator, "created_at": iso(r.created_at)}
                    for r in conn.execute(q).all()]
