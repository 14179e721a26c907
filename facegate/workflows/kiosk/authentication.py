"""The self-service kiosk's decision, in one of three modes:

- ``document``: the live person against the ID card's chip photo (about 102x126 px), at the
  operating point calibrated for chip photos (``calibration/<pack>-document.json``);
- ``subject``: 1:1 against an enrolled subject's templates;
- ``search``: 1:N over the gallery with the margin rule, then the 1:1 review rules.

Without a passed liveness session the answer is never an automatic match
(``FACEGATE_KIOSK_REQUIRE_LIVENESS``, on by default): a photo held up to the camera must not
open the door. Every answer and every refusal is recorded against the kiosk in one transaction:
a ``kiosk_events`` row (for ``facegate kiosks report``) and an audit row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from facegate.errors import FacegateError
from facegate.liveness.service import LivenessProof
from facegate.matching.decisions import Decision, decide_1to1, review_search, threshold, tightened
from facegate.matching.scores import similarity
from facegate.storage import audit
from facegate.storage.db import write_transaction
from facegate.vocab import KioskMode
from facegate.workflows.context import WorkflowContext
from facegate.workflows.kiosk.registry import record_event
from facegate.workflows.verification import document_face


def kiosk_mode(document: bytes | None, subject_id: str | None) -> KioskMode:
    if document is not None and subject_id:
        raise FacegateError("invalid_request", "send document_image or subject_id, not both")
    return "document" if document is not None else "subject" if subject_id else "search"


@dataclass(frozen=True)
class KioskAnswer:
    mode: KioskMode
    kiosk_id: str
    decision: Decision
    subject_id: str | None               # the person the kiosk identified (only with a match)
    liveness: LivenessProof | None
    detail: dict                         # mode-specific: document quality, or the search's candidates
    latency_ms: float
    review_band: float
    registered: bool = False             # the kiosk id is in the kiosk registry

    def as_dict(self) -> dict:
        return {**self.decision.as_dict(), "review_band": self.review_band,
                "subject_id": self.subject_id if self.decision.match else None,
                "operating_point": self.decision.point.as_dict(), **self.detail, "mode": self.mode,
                "kiosk_id": self.kiosk_id, "liveness": None if self.liveness is None else self.liveness.public(),
                "latency_ms": round(self.latency_ms, 1)}


def _live_face(ctx: WorkflowContext, image: bytes | None, liveness: LivenessProof | None,
               second: bool = False) -> tuple[np.ndarray, float, tuple[str, ...], np.ndarray | None]:
    """(embedding, quality, review reasons, second-opinion embedding when ``second`` and a still
    was sent) of the person at the kiosk: the still when one was sent (checked against the
    liveness capture), else the capture's own face."""
    face = ctx.face(image, policy="single", second=second) if image is not None else None
    if liveness is None:
        reasons = ("no_liveness",) if ctx.settings.kiosk_require_liveness else ()
    else:
        reasons = ctx.liveness_reasons(liveness, None if face is None else face.embedding)
    if face is not None:
        return face.embedding, face.quality.score, reasons, face.second_embedding
    if liveness is None or not liveness.passed:
        raise FacegateError("invalid_request", "send the live capture as 'image' or a passed liveness_session_id",
                            field="image")
    return liveness.embedding, 1.0, reasons, None


def authenticate(ctx: WorkflowContext, who: audit.Actor, kiosk_id: str, mode: KioskMode, started: float, *,
                 image: bytes | None = None, document: bytes | None = None, subject_id: str | None = None,
                 top_k: int = 5, fmr: float | None = None, liveness: LivenessProof | None = None,
                 decision_id: str | None = None, also=None) -> KioskAnswer:
    """Decide, then record the event and the audit row together (see the module docstring).
    ``also(conn, answer)`` runs in that transaction (the review desk opens a case for a search
    that goes to a person); whatever it raises leaves nothing written."""
    s = ctx.settings
    requested = subject_id
    fmr = tightened(s.identify_fmr if mode == "search" else s.target_fmr, fmr)
    embedding, quality, reasons, second = _live_face(ctx, image, liveness, second=mode == "search")
    detail: dict = {}
    if mode == "document":
        doc = document_face(ctx, document)
        point = threshold(ctx.document_points, fmr)
        decision = decide_1to1(similarity(embedding, doc.embedding), point, quality, ctx.rules)
        detail["document_quality"] = doc.quality.as_dict()
    elif mode == "subject":
        status = ctx.gallery.store.subject_status(subject_id)
        match = ctx.gallery.verify(subject_id, embedding, fmr, quality=quality)
        decision = decide_1to1(match.score, match.point, quality, ctx.rules, subject_status=status)
    else:
        found = ctx.gallery.identify(embedding, top_k, fmr, quality=quality, second=second)
        decision = review_search(found, quality, ctx.rules)
        subject_id = found.subject_id
        f = found.as_dict()
        detail = {k: f[k] for k in ("candidates", "margin", "required_margin", "rule", "rule_note")}
    decision = decision.under_review(*reasons)
    answer = KioskAnswer(mode, kiosk_id, decision, subject_id, liveness, detail,
                         (time.perf_counter() - started) * 1000, s.review_band)
    reason = None
    if not decision.match:
        reason = (decision.reasons or ("face_mismatch",))[0]
    with write_transaction(ctx.gallery.store.db) as conn:
        answer = replace(answer, registered=record_event(conn, kiosk_id, mode, decision.decision, reason,
                                                         answer.latency_ms))
        audit.append(conn, **who.fields(), operation="kiosk.authenticate", outcome=decision.decision,
                     subject_id=answer.subject_id if decision.match else requested,
                     scores={"score": decision.as_dict()["score"], "threshold": decision.as_dict()["threshold"]},
                     detail={"decision_id": decision_id, "mode": mode, "kiosk_id": kiosk_id,
                             "review_reasons": list(decision.reasons),
                             "liveness_session_id": liveness and liveness.session_id})
        if also is not None:
            also(conn, answer)
    return answer


def record_refusal(db, who: audit.Actor, kiosk_id: str, mode: str, code: str, started: float) -> bool:
    """A refused kiosk call (bad photo, unknown subject, ...): its event and audit row; returns
    whether the kiosk is registered."""
    with write_transaction(db) as conn:
        registered = record_event(conn, kiosk_id, mode, "error", code, (time.perf_counter() - started) * 1000)
        audit.append(conn, **who.fields(), operation="kiosk.authenticate", outcome=code,
                     detail={"kiosk_id": kiosk_id, "mode": mode})
    return registered
