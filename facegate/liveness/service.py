"""Liveness as the workflows use it: sessions, their judge, and the one-time proof a decision consumes.

    lv = LivenessService.load(engine, settings)
    proof = lv.consume(session_id, key, subject_id)     # once; raises for unknown/expired/used sessions
    proof.review_reasons(still_embedding, engine.operating_points, settings.liveness_identity_fmr)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from facegate.errors import FacegateError
from facegate.liveness.capture import decode_video, encode_frame, reduce_frame, stored_jpeg
from facegate.liveness.judge import LivenessJudge
from facegate.liveness.sessions import HeldFrame, LivenessSessions
from facegate.matching.decisions import capture_reasons
from facegate.matching.operating_points import OperatingPoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivenessProof:
    """What a consumed session proves: whether it passed, and the live face's embedding."""
    session_id: str
    passed: bool
    score: float | None = None
    subject_id: str | None = None
    checks: tuple[str, ...] = ()
    reason: str | None = None
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    evidence: tuple[HeldFrame, ...] = field(default=(), repr=False, compare=False)   # the capture's best frames

    def review_reasons(self, still: np.ndarray | None, points: OperatingPoints | None, fmr: float) -> tuple[str, ...]:
        """Why a decision resting on this proof goes to a person: the session failed, or the
        still photo sent with it shows someone else than the capture (the one same-person rule)."""
        if not self.passed:
            return ("liveness_failed",)
        return capture_reasons(points, fmr, self.embedding, still)

    def public(self) -> dict:
        out = {"session_id": self.session_id, "passed": self.passed, "score": self.score, "checks": list(self.checks)}
        if self.reason is not None:
            out["reason"] = self.reason
        return out


class LivenessService:
    """The sessions and their judge; ``consume`` is what verify, kiosk and certification call."""

    def __init__(self, sessions: LivenessSessions, judge: LivenessJudge):
        self.sessions = sessions
        self.judge = judge

    @classmethod
    def load(cls, engine, store, settings) -> "LivenessService":
        """On ``store``'s database and data keys (the sessions are shared by every replica)."""
        return cls(LivenessSessions(store.db, store.keys, settings), LivenessJudge.load(engine, settings))

    def status(self) -> dict:
        return {"passive": self.judge.passive_status, "store": "database"}

    def add_jpegs(self, session_id: str, items: list[tuple[float, bytes]], nonce: str, owner: str | None) -> int:
        """Frames uploaded as images: checked, reduced to what the judge uses, appended."""
        s = self.sessions.settings
        self.sessions.pending(session_id, nonce, owner)
        frames = [(t, stored_jpeg(data, s.max_image_bytes, s.liveness_max_frame_pixels)) for t, data in items]
        count = self.sessions.add_frames(session_id, frames, nonce, owner)
        self.observe(session_id, owner)
        return count

    def add_video(self, session_id: str, video: bytes, nonce: str, owner: str | None) -> int:
        """A short video's frames, reduced and appended after any frames already sent."""
        s = self.sessions.settings
        session = self.sessions.pending(session_id, nonce, owner)
        offset = session.last_t + 1e-3 if session.last_t is not None else 0.0
        frames = [(offset + t, encode_frame(reduce_frame(bgr)))
                  for t, bgr in decode_video(video, s.liveness_max_frame_pixels, s.liveness_max_frames - session.frames,
                                             s.liveness_max_seconds)]
        count = self.sessions.add_frames(session_id, frames, nonce, owner)
        self.observe(session_id, owner)
        return count

    def observe(self, session_id: str, owner: str | None) -> None:
        """Track what arrived while the person acts, so that completing only finishes the rest.
        A failure here loses nothing: completing observes whatever is not observed yet."""
        try:
            self.sessions.observe(session_id, self.judge.tracker, owner)
        except Exception:        # noqa: BLE001 - the upload itself succeeded
            log.exception("liveness session %s: tracking on arrival failed; it runs when the capture completes",
                          session_id)

    def consume(self, session_id: str, key, subject_id: str | None = None) -> LivenessProof:
        """The passed session's verdict and face embedding, once; a session that did not pass
        (or was opened for another subject) gives ``passed: False``."""
        try:
            s = self.sessions.consume(session_id, subject_id, owner=key.key_id if key else None)
        except FacegateError as exc:
            if exc.code != "liveness_failed":
                raise
            held = self.sessions.take_evidence(session_id, owner=key.key_id if key else None)
            return LivenessProof(session_id, False, reason=exc.message, checks=tuple(exc.detail.get("reasons", [])),
                                 evidence=held)
        result = s.result or {}
        return LivenessProof(s.id, True, score=result.get("score"), subject_id=s.subject_id,
                             checks=tuple(result.get("reasons", [])), embedding=s.embedding, evidence=s.evidence)
