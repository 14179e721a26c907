"""What the workflows work with, handed in explicitly: settings, engine, gallery, liveness, and an
observer for stage timings (the service passes its Prometheus metrics; tools pass nothing)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import ContextManager, Protocol

from facegate.config import Settings
from facegate.engine import MIN_QUALITY, Face, FaceEngine
from facegate.errors import FacegateError
from facegate.gallery.gallery import Gallery
from facegate.liveness.service import LivenessProof, LivenessService
from facegate.matching.decisions import ReviewRules
from facegate.matching.operating_points import OperatingPoints


class Observer(Protocol):
    def stage(self, name: str) -> ContextManager: ...

    def face(self, face: Face) -> None: ...


class Unobserved:
    def stage(self, name: str) -> ContextManager:
        return nullcontext()

    def face(self, face: Face) -> None:
        pass


@dataclass
class WorkflowContext:
    settings: Settings
    engine: FaceEngine
    gallery: Gallery
    liveness: LivenessService | None = None
    observe: Observer = field(default_factory=Unobserved)
    document_points: OperatingPoints | None = None     # person vs ID-card chip photo

    def __post_init__(self):
        if self.document_points is None:
            self.document_points = OperatingPoints.for_pack(self.engine.pack, "document") or self.engine.operating_points

    @property
    def rules(self) -> ReviewRules:
        return ReviewRules.from_settings(self.settings)

    def face(self, image: bytes, policy: str = "single", min_face_px: int | None = None,
             min_quality: float | None = MIN_QUALITY, detect_min_face: int | None = None,
             second: bool = False) -> Face:
        """The one embedded face in ``image`` (``FaceEngine.face``), its stage times observed;
        ``second``: also its second-opinion embedding (1:N searches)."""
        face = self.engine.face(image, policy=policy, min_face_px=min_face_px, min_quality=min_quality,
                                detect_min_face=detect_min_face)
        if second:
            self.engine.second_embedding(face)
        self.observe.face(face)
        return face

    def consume_liveness(self, session_id: str | None, key, subject_id: str | None = None) -> LivenessProof | None:
        """The proof of a passed liveness session (None when no session was named), used up."""
        if not session_id:
            return None
        if self.liveness is None:
            raise FacegateError("invalid_request", "liveness sessions are not enabled on this server",
                                field="liveness_session_id")
        return self.liveness.consume(session_id, key, subject_id)

    def liveness_reasons(self, proof: LivenessProof | None, still) -> tuple[str, ...]:
        if proof is None:
            return ()
        return proof.review_reasons(still, self.engine.operating_points, self.settings.liveness_identity_fmr)
