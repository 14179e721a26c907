"""Liveness as the workflows use it: sessions, their judge, and the one-time proof a decision consumes.

    lv = LivenessService.load(engine, settings)
    proof = lv.consume(session_id, key, subject_id)     # once; raises for unknown/expired/used sessions
    proof.review_reasons(still_embedding, engine.operating_points, settings.liveness_identity_fmr)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facegate.errors import FacegateError
from facegate.liveness.challenge import LivenessSessions
from facegate.liveness.judge import LivenessJudge
from facegate.matching.decisions import capture_reasons
from facegate.matching.operating_points import OperatingPoints


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
    def load(cls, engine, settings) -> "LivenessService":
        return cls(LivenessSessions(settings), LivenessJudge.load(engine, settings))

    def status(self) -> dict:
        return {"passive": self.judge.passive_status, "store": "memory"}

    def consume(self, session_id: str, key, subject_id: str | None = None) -> LivenessProof:
        """The passed session's verdict and face embedding, once; a session that did not pass
        (or was opened for another subject) gives ``passed: False``."""
        try:
            s = self.sessions.consume(session_id, subject_id, owner=key.key_id if key else None)
        except FacegateError as exc:
            if exc.code != "liveness_failed":
                raise
            return LivenessProof(session_id, False, reason=exc.message, checks=tuple(exc.detail.get("reasons", [])))
        result = s.result or {}
        return LivenessProof(s.id, True, score=result.get("score"), subject_id=s.subject_id,
                             checks=tuple(result.get("reasons", [])), embedding=s.embedding)
