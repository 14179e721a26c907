"""The review desk: decisions that went to a person, the evidence they rest on, and the person's decision.

A case is opened in the transaction that records the automatic decision (the ledger's ``also``
hook, :meth:`ReviewDesk.keeper`), so a certification answered ``manual_review`` always has its
case, and its evidence, or neither. Evidence is kept only for what a person will look at:

- ``manual_review``, and ``failed`` with a fraud signal, keep the capture's best frames
  (:data:`facegate.liveness.sessions.EVIDENCE_FRAMES`, held encrypted since the capture was
  judged, with their per-frame scores) and the still sent with it, encrypted under the data key
  and bound to the case (:func:`facegate.storage.aad.evidence_aad`);
- every other outcome keeps none (the held frames were deleted when the session was consumed).

A reviewer **claims** a case (``console_claim_s``) before deciding; a claim held by someone else
and not expired refuses the decision (``case_claimed``). The decision itself goes through the
ledger's manual path (:meth:`CertificationLedger.manual`): its row, its audit row and the case's
closing are one transaction, closed by a conditional UPDATE, so two reviewers racing for one
case record one decision (``case_decided`` for the other). Evidence is deleted
``retention_decision_evidence_days`` after the decision by the retention rule
``decision_evidence`` (:mod:`facegate.storage.retention`).

A kiosk search sent to a person is waited for: the kiosk key that opened the case asks for its
answer (:meth:`ReviewDesk.kiosk_review`, long-polled by the service) until
``kiosk_review_wait_s`` after it opened; a case nobody holds by then ends ``expired`` (the kiosk
sends the person to a counter). A decision or an expiry is announced on the change feed's
:data:`facegate.storage.changefeed.REVIEWS` channel, so a kiosk waiting on another replica hears
of it at once; waiting kiosk cases come first in the queue.

Every view of a person's image is audited (``evidence.view``: who saw which subject's what). A
kiosk case has no subject of its own: a view of its frames is one audit row per candidate (the
person at the kiosk may be any of them), in one transaction, so each candidate's audit trail
shows it.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.errors import FacegateError
from facegate.liveness.capture import stored_jpeg
from facegate.storage import audit, changefeed
from facegate.storage.aad import evidence_aad
from facegate.storage.audit import Actor
from facegate.storage.db import write_transaction
from facegate.storage.schema import operators, reference_photos, review_cases, review_evidence, subjects
from facegate.vocab import MANUAL_OUTCOMES, REVIEW_STATUSES, REVIEW_WORKFLOWS

MAX_PAGE = 100                 # cases per queue page
MAX_NOTE = 2000
MAX_FILTER = 128

# Reasons in words (English; the console translates the same keys).
REASON_WORDS = {
    "score_near_threshold": "the score is just under the threshold",
    "low_quality": "the face image quality is low",
    "capture_face_mismatch": "the still photo may show someone else than the live capture",
    "shared_face": "the same face certified or is enrolled for another subject",
    "locked_after_failures": "locked after repeated failed attempts",
    "liveness_failed": "the liveness check did not pass",
    "face_mismatch": "the face does not match the enrolled photo",
    "no_liveness": "no liveness check was done",
    "ambiguous_margin": "two enrolled people are too close to tell apart",
}


def _json(text: str | None, default):
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _bounded(value: str | None, field: str, max_len: int = MAX_FILTER) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > max_len or any(ord(c) < 32 for c in value):
        raise FacegateError("invalid_request", f"{field} is at most {max_len} printable characters", field=field)
    return value


class ReviewDesk:
    """Review cases over the store's database; decisions through ``ledger`` (the certification ledger)."""

    def __init__(self, settings, store, ledger, on_ended=None):
        """``on_ended(how, waited_s)``: a kiosk case ended (``decided`` or ``expired``) after its
        person waited ``waited_s`` seconds (the service's metrics)."""
        self.settings = settings
        self.store = store
        self.db = store.db
        self.keys = store.keys
        self.ledger = ledger
        self.on_ended = on_ended or (lambda how, waited_s: None)

    # ------------------------------------------------------------------ opening
    def needs_person(self, answer: dict) -> bool:
        return answer["outcome"] == "manual_review" or (answer["outcome"] == "failed" and bool(answer["fraud_signals"]))

    def keeper(self, proof=None, still: bytes | None = None, liveness: dict | None = None):
        """The ledger's ``also`` hook: opens a case with its evidence when the attempt goes to a person."""
        def keep(conn, answer: dict) -> None:
            if not self.needs_person(answer):
                return
            frames = self._evidence(proof, still)
            live = liveness or ({"passed": proof.passed, "score": proof.score, "checks": list(proof.checks)}
                                if proof is not None else None)
            scores = {k: answer.get(k) for k in ("score", "threshold", "fmr", "quality")} | {"liveness": live}
            answer["review_case_id"] = self.open_case(
                conn, workflow="certification", subject_pk=answer["subject_pk"], subject_id=answer["subject_id"],
                certification_id=answer["certification_id"], period=answer["period"], outcome=answer["outcome"],
                reasons=answer["reasons"], scores=scores, signals=answer["fraud_signals"], evidence=frames)
        return keep

    def _evidence(self, proof, still: bytes | None) -> list[tuple]:
        frames = [("frame", i, h.jpeg, h.scores | {"t": round(h.t, 3)})
                  for i, h in enumerate(getattr(proof, "evidence", ()) or ())]
        if still is not None:
            s = self.settings
            frames.append(("still", 0, stored_jpeg(still, s.max_image_bytes, s.max_image_pixels), {}))
        return frames

    def kiosk_keeper(self, proof=None, still: bytes | None = None, key_id: str | None = None):
        """The kiosk decision's ``also`` hook: a 1:N search that goes to a person opens a case
        with the candidates and the capture's evidence (a person then picks the right subject, or
        none), which the kiosk key ``key_id`` may wait for until ``review_wait_until``."""
        def keep(conn, answer) -> None:
            if answer.mode != "search" or answer.decision.decision != "manual_review":
                return
            d = answer.decision.as_dict()
            live = None if proof is None else {"passed": proof.passed, "score": proof.score, "checks": list(proof.checks)}
            scores = {"score": d.get("score"), "threshold": d.get("threshold"), "fmr": d.get("fmr"),
                      "margin": answer.detail.get("margin"), "required_margin": answer.detail.get("required_margin"),
                      "candidates": [{"subject_id": c["subject_id"], "score": c["score"]}
                                     for c in (answer.detail.get("candidates") or [])][:10],
                      "liveness": live}
            wait_until = utcnow() + timedelta(seconds=self.settings.kiosk_review_wait_s)
            answer.detail["review_case_id"] = self.open_case(
                conn, workflow="kiosk", kiosk_id=answer.kiosk_id, outcome="manual_review",
                reasons=list(answer.decision.reasons), scores=scores, evidence=self._evidence(proof, still),
                opened_by_key=key_id, wait_until=wait_until)
            answer.detail["review_wait_until"] = iso(wait_until)
        return keep

    def open_case(self, conn, *, workflow: str, outcome: str, reasons, scores, signals=(), subject_pk=None,
                  subject_id=None, certification_id=None, kiosk_id=None, period=None, evidence=(),
                  opened_by_key=None, wait_until=None) -> int:
        """A pending case and its encrypted evidence, in the caller's transaction."""
        if workflow not in REVIEW_WORKFLOWS:
            raise ValueError(workflow)
        now = utcnow()
        case_id = conn.execute(review_cases.insert().values(
            workflow=workflow, status="pending", subject_pk=subject_pk, subject_id=subject_id,
            certification_id=certification_id, kiosk_id=kiosk_id, period=period, outcome=outcome,
            reasons=json.dumps(list(reasons)), scores=json.dumps(scores, default=float),
            signals=json.dumps(list(signals)), created_at=now, opened_by_key=opened_by_key,
            wait_until=wait_until)).inserted_primary_key[0]
        for kind, seq, jpeg, sc in evidence:
            blob, kid = self.keys.encrypt(jpeg, evidence_aad(case_id, kind, seq))
            conn.execute(review_evidence.insert().values(case_id=case_id, kind=kind, seq=seq,
                                                         scores=json.dumps(sc, default=float), data_enc=blob,
                                                         key_id=kid, created_at=now))
        return int(case_id)

    # ------------------------------------------------------------------ reading
    def queue(self, *, status: str = "pending", workflow: str | None = None, reason: str | None = None,
              period: str | None = None, kiosk_id: str | None = None, subject_id: str | None = None,
              after: int | None = None, limit: int = 50) -> dict:
        """One page of cases, oldest first (keyset pagination on the case id, which grows with
        time: ``after`` = the last id of the previous page)."""
        if status not in REVIEW_STATUSES:
            raise FacegateError("invalid_request", f"status is one of {', '.join(REVIEW_STATUSES)}", field="status")
        if workflow is not None and workflow not in REVIEW_WORKFLOWS:
            raise FacegateError("invalid_request", f"workflow is one of {', '.join(REVIEW_WORKFLOWS)}",
                                field="workflow")
        if not 1 <= int(limit) <= MAX_PAGE:
            raise FacegateError("invalid_request", f"limit is 1 to {MAX_PAGE}", field="limit")
        reason, period = _bounded(reason, "reason", 64), _bounded(period, "period", 16)
        kiosk_id, subject_id = _bounded(kiosk_id, "kiosk_id", 64), _bounded(subject_id, "subject_id")
        self.expire_waiting()
        c = review_cases.c
        columns = (c.id, c.workflow, c.status, c.subject_id, c.certification_id, c.kiosk_id, c.period,
                   c.outcome, c.reasons, c.scores, c.signals, c.created_at, c.claimed_by, c.claim_expires_at,
                   c.decided_by, c.decided_at, c.decision, c.decided_subject_id, c.wait_until)
        where = [c.status == status]
        if workflow:
            where.append(c.workflow == workflow)
        if period:
            where.append(c.period == period)
        if kiosk_id:
            where.append(c.kiosk_id == kiosk_id)
        if subject_id:
            where.append(c.subject_id == subject_id)
        if reason:
            where.append(c.reasons.contains(json.dumps(reason), autoescape=True))
        # People standing at a kiosk come first: the first page of pending cases leads with the
        # kiosk cases still waited for, which the keyset pages (oldest first) leave out.
        waiting = sa.and_(c.workflow == "kiosk", c.status == "pending", c.wait_until.is_not(None))
        q = sa.select(*columns).where(*where).order_by(c.id).limit(int(limit))
        if status == "pending":
            q = q.where(sa.not_(waiting))
        if after:
            q = q.where(c.id > int(after))
        with self.db.connect() as conn:
            lead = [] if after or status != "pending" else conn.execute(
                sa.select(*columns).where(*where, waiting).order_by(c.id).limit(MAX_PAGE)).all()
            rows = conn.execute(q).all()
        now = utcnow()
        return {"cases": [self._case_dict(r, now) for r in (*lead, *rows)],
                "next_after": int(rows[-1].id) if len(rows) == int(limit) else None}

    @staticmethod
    def _case_dict(r, now: datetime) -> dict:
        m = r._mapping
        claim_live = m["claimed_by"] and m["claim_expires_at"] and _aware(m["claim_expires_at"]) > now
        reasons = _json(m["reasons"], [])
        return {"case_id": int(m["id"]), "workflow": m["workflow"], "status": m["status"],
                "subject_id": m["subject_id"], "certification_id": m["certification_id"], "kiosk_id": m["kiosk_id"],
                "period": m["period"], "outcome": m["outcome"], "reasons": reasons,
                "reason_words": [REASON_WORDS.get(x, x) for x in reasons],
                "scores": _json(m["scores"], {}), "signals": _json(m["signals"], []),
                "created_at": iso(m["created_at"]),
                "claimed_by": m["claimed_by"] if claim_live else None,
                "claim_expires_at": iso(m["claim_expires_at"]) if claim_live else None,
                "decided_by": m["decided_by"], "decided_at": iso(m["decided_at"]), "decision": m["decision"],
                "decided_subject_id": m.get("decided_subject_id"), **_waiting(m, now)}

    def _row(self, conn, case_id: int):
        row = conn.execute(sa.select(review_cases).where(review_cases.c.id == int(case_id))).one_or_none()
        if row is None:
            raise FacegateError("unknown_case", f"no review case {case_id}", case_id=int(case_id))
        return row

    def case(self, case_id: int) -> dict:
        """A case with what is kept about it (evidence rows without their bytes)."""
        with self.db.connect() as conn:
            row = self._row(conn, case_id)
            ev = conn.execute(sa.select(review_evidence.c.kind, review_evidence.c.seq, review_evidence.c.scores)
                              .where(review_evidence.c.case_id == row.id)
                              .order_by(review_evidence.c.kind, review_evidence.c.seq)).all()
        out = self._case_dict(row, utcnow()) | {"note": row.note}
        out["evidence"] = [{"kind": k, "seq": s, "scores": _json(sc, {})} for k, s, sc in ev]
        out["reference_photo"] = None
        if row.subject_id:
            try:
                refs = self.store.list_templates(row.subject_id)
            except FacegateError:
                refs = []
            out["reference_photo"] = bool(self._reference_ids(row.subject_pk))
            out["templates"] = len(refs)
        out["reference_kept"] = bool(self.settings.keep_reference)
        return out

    def _reference_ids(self, subject_pk) -> list[int]:
        with self.db.connect() as conn:
            return list(conn.execute(sa.select(reference_photos.c.template_id)
                                     .where(reference_photos.c.subject_pk == subject_pk)).scalars())

    # ------------------------------------------------------------------ images (each view audited)
    def evidence_image(self, case_id: int, kind: str, seq: int, who: Actor) -> bytes:
        e = review_evidence
        with self.db.connect() as conn:
            row = self._row(conn, case_id)
            ev = conn.execute(sa.select(e.c.data_enc, e.c.key_id).where(
                e.c.case_id == row.id, e.c.kind == kind, e.c.seq == int(seq))).one_or_none()
        if ev is None:
            raise FacegateError("not_found", "no such evidence image (deleted after the retention period?)")
        data = self.keys.decrypt(ev.data_enc, ev.key_id, evidence_aad(row.id, kind, int(seq)))
        concerned = _concerned(row)
        detail = {"case_id": int(row.id), "image": f"{kind}:{int(seq)}"}
        if not row.subject_id:
            detail["subjects"] = concerned
        with write_transaction(self.db) as conn:
            for subject_id in concerned:
                audit.append(conn, **who.fields(), operation=audit.IMAGE_VIEW, outcome="ok", subject_id=subject_id,
                             detail=detail)
        return data

    def reference_image(self, case_id: int, who: Actor) -> bytes:
        with self.db.connect() as conn:
            row = self._row(conn, case_id)
        if not row.subject_id:
            raise FacegateError("not_found", "this case has no subject")
        photos = self.store.reference_photos_of(row.subject_id)
        if not photos:
            raise FacegateError("not_found", "no reference photo is kept for this subject")
        audit.record(self.db, **who.fields(), operation=audit.IMAGE_VIEW, outcome="ok", subject_id=row.subject_id,
                     detail={"case_id": int(row.id), "image": f"reference:{photos[0]['face_id']}"})
        return photos[0]["jpeg"]

    # ------------------------------------------------------------------ claims and decisions
    def claim(self, case_id: int, operator: str, who: Actor) -> dict:
        """Hold the case for ``console_claim_s`` (renewing one's own claim)."""
        now = utcnow()
        until = now + timedelta(seconds=self.settings.console_claim_s)
        c = review_cases.c
        self.expire_waiting()
        with write_transaction(self.db) as conn:
            row = self._row(conn, case_id)
            self._check_open(row, operator, now)
            conn.execute(review_cases.update().where(c.id == row.id).values(claimed_by=operator,
                                                                             claim_expires_at=until))
            audit.append(conn, **who.fields(), operation="review.claim", outcome="ok", subject_id=row.subject_id,
                         detail={"case_id": int(row.id), "until": iso(until)})
        return {"case_id": int(row.id), "claimed_by": operator, "claim_expires_at": iso(until)}

    @staticmethod
    def _check_open(row, operator: str, now: datetime) -> None:
        if row.status == "expired":
            raise FacegateError("case_expired", f"case {row.id} expired: the person at the kiosk was sent to a "
                                "counter", case_id=int(row.id))
        if row.status == "decided":
            raise FacegateError("case_decided", f"case {row.id} was decided by {row.decided_by}",
                                case_id=int(row.id), decided_by=row.decided_by)
        if (row.claimed_by and row.claimed_by != operator and row.claim_expires_at
                and _aware(row.claim_expires_at) > now):
            raise FacegateError("case_claimed", f"case {row.id} is held by {row.claimed_by}",
                                case_id=int(row.id), claimed_by=row.claimed_by,
                                claim_expires_at=iso(row.claim_expires_at))

    def decide(self, case_id: int, outcome: str, note: str, *, operator: str, who: Actor) -> dict:
        """The person's decision (``certified`` / ``failed``) with a required note, through the
        ledger's manual path; the case closes in the same transaction."""
        if outcome not in MANUAL_OUTCOMES:
            raise FacegateError("invalid_request", f"decision is one of {', '.join(MANUAL_OUTCOMES)}",
                                field="decision")
        note = self._note(note)
        now = utcnow()
        with self.db.connect() as conn:
            row = self._row(conn, case_id)
        self._check_open(row, operator, now)
        if row.workflow != "certification" or not row.subject_id:
            raise FacegateError("invalid_request", "only certification cases are decided here", case_id=int(row.id))
        c = review_cases.c
        purge_after = now + timedelta(days=self.settings.retention_decision_evidence_days)

        def close(conn, certification_id: int) -> None:
            free = sa.or_(c.claimed_by.is_(None), c.claimed_by == operator, c.claim_expires_at <= now)
            done = conn.execute(review_cases.update().where(c.id == row.id, c.status == "pending", free).values(
                status="decided", decided_by=operator, decided_at=now, decision=outcome, note=note,
                purge_after=purge_after, claimed_by=None, claim_expires_at=None)).rowcount
            if done != 1:
                self._check_open(self._row(conn, row.id), operator, now)
                raise FacegateError("case_decided", f"case {row.id} was decided meanwhile", case_id=int(row.id))
            audit.append(conn, **who.fields(), operation="review.decide", outcome=outcome, subject_id=row.subject_id,
                         detail={"case_id": int(row.id), "certification_id": certification_id,
                                 "reviewed_certification_id": row.certification_id, "operator": operator})

        result = self.ledger.manual(row.subject_id, outcome, note, who=who, operator=operator, also=close)
        return {"case_id": int(row.id), "decision": outcome, "decided_by": operator, "decided_at": iso(now),
                "certification": result}

    def identify(self, case_id: int, subject_id: str | None, note: str, *, operator: str, who: Actor) -> dict:
        """A person's answer to a kiosk search: the right subject among the candidates, or none."""
        note = self._note(note)
        self.expire_waiting()
        now = utcnow()
        c = review_cases.c
        with write_transaction(self.db) as conn:
            row = self._row(conn, case_id)
            self._check_open(row, operator, now)
            if row.workflow != "kiosk":
                raise FacegateError("invalid_request", "this is not a kiosk search case", case_id=int(row.id))
            candidates = [x["subject_id"] for x in _json(row.scores, {}).get("candidates", [])]
            if subject_id is not None and subject_id not in candidates:
                raise FacegateError("invalid_request", "choose one of the case's candidates, or none",
                                    field="subject_id")
            if subject_id is not None and conn.execute(sa.select(subjects.c.pk).where(
                    subjects.c.subject_id == subject_id)).scalar() is None:
                raise FacegateError("unknown_subject", f"subject {subject_id!r} was erased meanwhile",
                                    subject_id=subject_id)
            decision = "identified" if subject_id else "none"
            free = sa.or_(c.claimed_by.is_(None), c.claimed_by == operator, c.claim_expires_at <= now)
            done = conn.execute(review_cases.update().where(c.id == row.id, c.status == "pending", free).values(
                status="decided", decided_by=operator, decided_at=now, decision=decision,
                decided_subject_id=subject_id, note=note,
                purge_after=now + timedelta(days=self.settings.retention_decision_evidence_days),
                claimed_by=None, claim_expires_at=None)).rowcount
            if done != 1:
                raise FacegateError("case_decided", f"case {row.id} was decided meanwhile", case_id=int(row.id))
            audit.append(conn, **who.fields(), operation="review.decide", outcome=decision, subject_id=subject_id,
                         detail={"case_id": int(row.id), "kiosk_id": row.kiosk_id, "operator": operator,
                                 "note": note, "candidates": candidates,
                                 "waited_s": round((now - _aware(row.created_at)).total_seconds(), 1)})
            changefeed.notify(conn, changefeed.REVIEWS, str(int(row.id)))
        waited_s = (now - _aware(row.created_at)).total_seconds()
        if row.wait_until is not None:
            self.on_ended("decided", waited_s)
        return {"case_id": int(row.id), "decision": decision, "subject_id": subject_id, "decided_by": operator,
                "decided_at": iso(now), "waited_s": round(waited_s, 1)}

    # ------------------------------------------------------------------ the kiosk waiting for its case
    def kiosk_review(self, case_id: int, key_id: str) -> dict:
        """What the kiosk that opened the case is told now: ``pending`` (keep waiting),
        ``decided`` (the subject a person named, or none; by which role, when) or ``expired``
        (send the person to a counter). Another key's case, or no kiosk case, is ``unknown_case``."""
        c = review_cases.c
        q = (sa.select(review_cases, operators.c.role.label("decided_by_role"))
             .outerjoin(operators, operators.c.name == c.decided_by)
             .where(c.id == int(case_id), c.workflow == "kiosk", c.opened_by_key == key_id))
        with self.db.connect() as conn:
            row = conn.execute(q).one_or_none()
        if row is None:
            raise FacegateError("unknown_case", f"no review case {case_id} for this kiosk", case_id=int(case_id))
        now = utcnow()
        if row.status == "pending" and _overdue(row, now):
            self.expire_waiting(now)               # or another replica did: read it again either way
            with self.db.connect() as conn:
                row = conn.execute(q).one()
        action = {"pending": "wait", "decided": "proceed", "expired": "go_to_counter"}[row.status]
        decided = row.status == "decided"
        return {"review_case_id": int(row.id), "status": row.status, "action": action,
                "decision": row.decision if decided else None,
                "subject_id": row.decided_subject_id if decided else None,
                "decided_by_role": row.decided_by_role if decided else None,
                "decided_at": iso(row.decided_at), "created_at": iso(row.created_at),
                "wait_until": iso(row.wait_until),
                "waited_s": round(((_aware(row.decided_at) if row.decided_at else now)
                                   - _aware(row.created_at)).total_seconds(), 1)}

    def expire_waiting(self, now: datetime | None = None) -> dict[int, float]:
        """End the kiosk cases whose person stopped waiting and that nobody holds: ``expired``,
        audited, announced. Returns their ids and how long each was waited for (seconds)."""
        now = now or utcnow()
        c = review_cases.c
        overdue = sa.and_(c.workflow == "kiosk", c.status == "pending", c.wait_until <= now,
                          sa.or_(c.claimed_by.is_(None), c.claim_expires_at <= now))
        with self.db.connect() as conn:
            if conn.execute(sa.select(c.id).where(overdue).limit(1)).first() is None:
                return {}
        with write_transaction(self.db) as conn:
            rows = conn.execute(sa.select(c.id, c.kiosk_id, c.created_at).where(overdue).order_by(c.id)
                                .limit(500)).all()
            for r in rows:
                conn.execute(review_cases.update().where(c.id == r.id).values(
                    status="expired", decided_at=now, claimed_by=None, claim_expires_at=None,
                    purge_after=now + timedelta(days=self.settings.retention_decision_evidence_days)))
                audit.append(conn, actor="system", operation="review.expired", outcome="expired",
                             detail={"case_id": int(r.id), "kiosk_id": r.kiosk_id,
                                     "waited_s": round((now - _aware(r.created_at)).total_seconds(), 1)})
                changefeed.notify(conn, changefeed.REVIEWS, str(int(r.id)))
        waited = {int(r.id): (now - _aware(r.created_at)).total_seconds() for r in rows}
        for waited_s in waited.values():
            self.on_ended("expired", waited_s)
        return waited

    def kiosk_waiting(self) -> dict:
        """Kiosk cases people are waiting for now: how many, and the longest wait (seconds)."""
        c = review_cases.c
        now = utcnow()
        with self.db.connect() as conn:
            n, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(c.created_at)).where(
                c.workflow == "kiosk", c.status == "pending", c.wait_until.is_not(None))).one()
        return {"waiting": int(n), "oldest_wait_s": (now - _aware(oldest)).total_seconds() if oldest else 0.0}

    def candidate_reference(self, case_id: int, n: int, who: Actor) -> bytes:
        """A kiosk case's ``n``-th candidate's reference photo (audited view)."""
        with self.db.connect() as conn:
            row = self._row(conn, case_id)
        candidates = _json(row.scores, {}).get("candidates", [])
        if not 0 <= n < len(candidates):
            raise FacegateError("not_found", "no such candidate")
        sid = candidates[n]["subject_id"]
        try:
            photos = self.store.reference_photos_of(sid)
        except FacegateError:
            photos = []
        if not photos:
            raise FacegateError("not_found", "no reference photo is kept for this candidate")
        audit.record(self.db, **who.fields(), operation=audit.IMAGE_VIEW, outcome="ok", subject_id=sid,
                     detail={"case_id": int(row.id), "image": f"reference:{photos[0]['face_id']}"})
        return photos[0]["jpeg"]

    @staticmethod
    def _note(note) -> str:
        if not isinstance(note, str) or not note.strip():
            raise FacegateError("invalid_request", "a decision needs a note saying why", field="note")
        if len(note) > MAX_NOTE:
            raise FacegateError("invalid_request", f"the note is at most {MAX_NOTE} characters", field="note")
        return note.strip()

    def cases_of_certifications(self, certification_ids) -> dict[int, int]:
        """certification id -> its review case id (for the fraud-signal list's links)."""
        ids = sorted({int(i) for i in certification_ids if i is not None})[:1000]
        if not ids:
            return {}
        c = review_cases.c
        with self.db.connect() as conn:
            return {int(a): int(b) for a, b in conn.execute(sa.select(c.certification_id, c.id)
                                                            .where(c.certification_id.in_(ids))).all()}

    def counts(self) -> dict:
        with self.db.connect() as conn:
            return dict(conn.execute(sa.select(review_cases.c.status, sa.func.count())
                                     .group_by(review_cases.c.status)).all())


def _overdue(row, now: datetime) -> bool:
    claim_live = row.claimed_by and row.claim_expires_at and _aware(row.claim_expires_at) > now
    return bool(row.wait_until is not None and _aware(row.wait_until) <= now and not claim_live)


def _waiting(m, now: datetime) -> dict:
    """A pending kiosk case's person is waiting at the kiosk: since when, and until when."""
    if m["workflow"] != "kiosk" or m["status"] != "pending" or m.get("wait_until") is None:
        return {"waiting_s": None, "wait_until": iso(m.get("wait_until"))}
    return {"waiting_s": round((now - _aware(m["created_at"])).total_seconds(), 1), "wait_until": iso(m["wait_until"])}


def _concerned(row) -> list[str | None]:
    """Whom a case's evidence shows: its subject, or a kiosk search's candidates."""
    if row.subject_id:
        return [row.subject_id]
    ids = [c["subject_id"] for c in _json(row.scores, {}).get("candidates", [])]
    if row.decided_subject_id:
        ids.append(row.decided_subject_id)
    return list(dict.fromkeys(ids)) or [None]


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
