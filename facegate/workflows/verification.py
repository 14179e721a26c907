"""Photo-based decisions: verify (1:1 against a subject), identify (1:N), compare (two photos).

Each takes its dependencies in a :class:`WorkflowContext` and returns a frozen result whose
``as_dict()`` is the API's answer body (without the request's ids, which the caller adds).
"""
from __future__ import annotations

from dataclasses import dataclass

from facegate.engine import Face
from facegate.liveness.service import LivenessProof
from facegate.matching.decisions import Decision, Identification, decide_1to1, threshold, tightened
from facegate.matching.scores import similarity
from facegate.workflows.context import WorkflowContext


@dataclass(frozen=True)
class Verification:
    decision: Decision
    subject_id: str
    face: Face
    face_id: int | None
    liveness: LivenessProof | None
    review_band: float

    def as_dict(self) -> dict:
        return {**self.decision.as_dict(), "review_band": self.review_band, "quality": self.face.quality.as_dict(),
                "subject_id": self.subject_id, "face_id": self.face_id,
                "liveness": None if self.liveness is None else self.liveness.public()}


def verify(ctx: WorkflowContext, subject_id: str, image: bytes, fmr: float | None = None,
           liveness: LivenessProof | None = None) -> Verification:
    """Is the person in ``image`` the enrolled subject? The face is one factor: weak evidence,
    a failed liveness session or a capture of someone else sends it to a person."""
    fmr = tightened(ctx.settings.target_fmr, fmr)
    with ctx.observe.stage("search"):       # unknown_subject before any inference
        status = ctx.gallery.store.subject_status(subject_id)
    face = ctx.face(image, policy="single")
    with ctx.observe.stage("search"):
        match = ctx.gallery.verify(subject_id, face.embedding, fmr, quality=face.quality.score)
    decision = decide_1to1(match.score, match.point, face.quality.score, ctx.rules, subject_status=status)
    decision = decision.under_review(*ctx.liveness_reasons(liveness, face.embedding))
    return Verification(decision, subject_id, face, match.face_id, liveness, ctx.settings.review_band)


@dataclass(frozen=True)
class Search:
    found: Identification
    face: Face

    def as_dict(self) -> dict:
        f = self.found.as_dict()
        return {"candidates": f["candidates"], "decision": f["decision"], "subject_id": f["subject_id"],
                "margin": f["margin"], "required_margin": f["required_margin"], "threshold": f["threshold"],
                "fmr": f["fmr"], "quality": self.face.quality.as_dict(), "rule": f["rule"], "rule_note": f["rule_note"]}


def identify(ctx: WorkflowContext, image: bytes, top_k: int, fmr: float | None = None) -> Search:
    fmr = tightened(ctx.settings.identify_fmr, fmr)
    face = ctx.face(image, policy="single", second=True)
    with ctx.observe.stage("search"):
        return Search(ctx.gallery.identify(face.embedding, top_k, fmr, quality=face.quality.score,
                                           second=face.second_embedding), face)


@dataclass(frozen=True)
class Comparison:
    decision: Decision
    live: Face
    document: Face
    review_band: float

    def as_dict(self) -> dict:
        return {**self.decision.as_dict(), "review_band": self.review_band, "quality_a": self.live.quality.as_dict(),
                "quality_b": self.document.quality.as_dict()}


def document_face(ctx: WorkflowContext, image: bytes) -> Face:
    """The face of an ID document's photo: the largest, as small as a chip photo allows, with no
    quality gate (the document is what it is)."""
    s = ctx.settings
    return ctx.face(image, policy="largest", min_face_px=s.min_document_face_px, min_quality=None,
                    detect_min_face=min(s.min_face_px, s.min_document_face_px))


def compare(ctx: WorkflowContext, image_a: bytes, image_b: bytes, fmr: float | None = None) -> Comparison:
    """A live photo (``image_a``) against a document photo (``image_b``) at the 1:1 point."""
    fmr = tightened(ctx.settings.target_fmr, fmr)
    live = ctx.face(image_a, policy="single")
    doc = document_face(ctx, image_b)
    quality = min(live.quality.score, doc.quality.score)
    point = threshold(ctx.engine.operating_points, fmr, quality)
    decision = decide_1to1(similarity(live.embedding, doc.embedding), point, quality, ctx.rules)
    return Comparison(decision, live, doc, ctx.settings.review_band)
