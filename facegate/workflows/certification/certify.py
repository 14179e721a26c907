"""A pensioner's certification attempt from a liveness capture (and optionally a still of it)."""
from __future__ import annotations

from facegate.liveness.service import LivenessProof
from facegate.storage.audit import Actor
from facegate.workflows.certification.ledger import CertificationLedger
from facegate.workflows.context import WorkflowContext


def certify(ctx: WorkflowContext, ledger: CertificationLedger, who: Actor, subject_id: str,
            liveness: LivenessProof | None, image: bytes | None = None, decision_id: str | None = None,
            also=None) -> dict:
    """Judge and record the attempt. The live face is the capture's, or the still's when one is
    sent, in which case the still must show the person who did the capture (else a person
    decides: ``capture_face_mismatch``). ``also``: the ledger's in-transaction hook (the review
    desk's keeper, which keeps the evidence of an attempt that goes to a person)."""
    passed = liveness is not None and liveness.passed
    embedding = liveness.embedding if passed else None
    quality, reasons = None, ()
    if image is not None:
        face = ctx.face(image, policy="single")
        quality = face.quality.score
        reasons = ctx.liveness_reasons(liveness, face.embedding) if passed else ()
        embedding = face.embedding
    return ledger.attempt(subject_id, embedding, liveness, quality, who=who, decision_id=decision_id,
                          review_reasons=reasons, also=also)
