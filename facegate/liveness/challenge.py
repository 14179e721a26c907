"""Liveness sessions: a random ordered challenge, a nonce and an expiry; the capture; the
verdict; single-use consumption by verification.

``LivenessSessions`` is an **in-memory** store (one process): sessions do not survive a restart
and are not shared between workers, so a deployment with several workers must route a
session's requests to one worker or replace this class with a database-backed one with the same
methods. Challenges are drawn from ``secrets`` unless ``Settings.liveness_seed`` is set (tests
only), which makes them deterministic.
"""
from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from facegate.errors import FacegateError
from facegate.liveness.actions import ACTIONS
from facegate.liveness.capture import Capture
from facegate.liveness.tokens import capture_token, token_matches

log = logging.getLogger(__name__)

PENDING, PASSED, FAILED, CONSUMED = "pending", "passed", "failed", "consumed"


def draw_challenge(rng: random.Random, length: int | None = None) -> list[str]:
    """2-3 distinct actions in random order; never both turns back to back."""
    length = length or rng.choice((2, 3))
    while True:
        actions = rng.sample(ACTIONS, length)
        if not any({a, b} == {"turn_left", "turn_right"} for a, b in zip(actions, actions[1:])):
            return actions


@dataclass
class LivenessSession:
    id: str
    challenge: list[str]
    nonce: str
    created_at: float
    expires_at: float
    subject_id: str | None = None
    purpose: str | None = None
    owner: str | None = None              # who opened it (e.g. the API key id); only they may use it
    token_hash: str | None = None         # sha256 of the session's capture token (the token is never stored)
    status: str = PENDING
    capture: Capture = field(default_factory=Capture, repr=False)
    result: dict | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)
    completed_at: float | None = None
    valid_until: float | None = None      # a passed session may be consumed until then
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def public(self) -> dict:
        out = {"session_id": self.id, "challenge": list(self.challenge), "nonce": self.nonce,
               "expires_at": _iso(self.expires_at), "status": self.status,
               "subject_id": self.subject_id, "purpose": self.purpose,
               "frames_received": len(self.capture.frames)}
        if self.valid_until is not None:
            out["valid_until"] = _iso(self.valid_until)
        return out


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


class LivenessSessions:
    """Thread-safe in-memory session store (see the module docstring)."""

    def __init__(self, settings, clock=time.time):
        self.settings = settings
        self.clock = clock
        self._rng = random.Random(settings.liveness_seed) if settings.liveness_seed is not None else secrets.SystemRandom()
        self._fixed = [a.strip() for a in settings.liveness_challenge.split(",") if a.strip()] or None
        if self._fixed:
            log.warning("FACEGATE_LIVENESS_CHALLENGE=%s: every session gets this challenge (tests only)",
                        settings.liveness_challenge)
        self._sessions: dict[str, LivenessSession] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle
    def create(self, subject_id: str | None = None, purpose: str | None = None,
               challenge: list[str] | None = None, owner: str | None = None) -> LivenessSession:
        now = self.clock()
        challenge = challenge or self._fixed
        if challenge is not None:
            unknown = [a for a in challenge if a not in ACTIONS]
            if unknown or not challenge:
                raise FacegateError("invalid_request", f"unknown actions {unknown}; use {list(ACTIONS)}")
        with self._lock:
            self._expire(now)
            s = LivenessSession(
                id=secrets.token_urlsafe(18), challenge=list(challenge or draw_challenge(self._rng)),
                nonce=secrets.token_urlsafe(16), created_at=now,
                expires_at=now + self.settings.liveness_session_ttl_s, subject_id=subject_id, purpose=purpose,
                owner=owner,
                capture=Capture(self.settings.liveness_max_frames, self.settings.liveness_max_seconds))
            self._sessions[s.id] = s
            return s

    def issue_token(self, session: LivenessSession) -> str:
        """A capture token for ``session``: it opens this session's capture and status calls
        until the session expires, nothing else (see :mod:`facegate.liveness.tokens`)."""
        token, session.token_hash = capture_token(session.id)
        return token

    def by_token(self, session_id: str, token: str) -> LivenessSession:
        """The session a capture token opens; ``unauthorized`` for a wrong, foreign or expired token."""
        with self._lock:
            s = self._sessions.get(session_id)
        if s is None or not token_matches(token, s.token_hash):
            raise FacegateError("unauthorized", "the capture token is not valid for this liveness session")
        if self.clock() > s.expires_at:
            raise FacegateError("unauthorized", "the capture token expired with its liveness session")
        return s

    def get(self, session_id: str, owner: str | None = None) -> LivenessSession:
        """The session; another owner's session is reported as unknown."""
        with self._lock:
            self._expire(self.clock())
            s = self._sessions.get(session_id)
        if s is None or (owner is not None and s.owner is not None and s.owner != owner):
            raise FacegateError("liveness_session_unknown", f"no liveness session {session_id!r} (or it expired)")
        return s

    def pending(self, session_id: str, nonce: str | None = None, owner: str | None = None) -> LivenessSession:
        """The session, if it is still waiting for its capture (and the nonce matches, when given)."""
        s = self.get(session_id, owner)
        if s.status != PENDING:
            raise FacegateError("liveness_session_closed", f"the session is already {s.status}", status=s.status)
        if self.clock() > s.expires_at:
            raise FacegateError("liveness_session_expired", "the challenge expired; start a new session")
        if nonce is not None and not secrets.compare_digest(str(nonce), s.nonce):
            raise FacegateError("invalid_request", "the nonce does not match the session's")
        return s

    def add_to_capture(self, session_id: str, add, nonce: str | None = None, owner: str | None = None) -> int:
        """Run ``add(capture)`` (which appends decoded frames) on a pending session, one upload at
        a time; returns the number of frames the capture now holds."""
        s = self.pending(session_id, nonce, owner)
        with s.lock:
            if s.status != PENDING:
                raise FacegateError("liveness_session_closed", f"the session is already {s.status}", status=s.status)
            add(s.capture)
            return len(s.capture.frames)

    def complete(self, session_id: str, judge, nonce: str | None = None, owner: str | None = None) -> dict:
        """Judge the session's capture; the verdict is final (a failed session cannot be retried)."""
        s = self.pending(session_id, nonce, owner)
        with s.lock:
            if s.status != PENDING:
                raise FacegateError("liveness_session_closed", f"the session is already {s.status}", status=s.status)
            s.status = "judging"
        try:
            result = judge.judge(s.challenge, s.capture)
        except Exception:
            s.status = FAILED
            raise
        now = self.clock()
        s.embedding = result.pop("embedding", None)
        s.result = result | {"session_id": s.id}
        s.completed_at = now
        s.status = PASSED if result["live"] else FAILED
        if s.status == PASSED:
            s.valid_until = now + self.settings.liveness_result_ttl_s
            s.result["valid_until"] = _iso(s.valid_until)
        s.capture = Capture(0, 0)   # frames are not kept once judged
        return s.result

    def consume(self, session_id: str, subject_id: str | None = None, owner: str | None = None) -> LivenessSession:
        """Use a passed session once (e.g. by verify): it must be passed, unexpired, unused, and
        for ``subject_id`` when the session named one. Returns it with its face embedding."""
        s = self.get(session_id, owner)
        with self._lock:
            if s.status == CONSUMED:
                raise FacegateError("liveness_session_closed", "the liveness session was already used",
                                    status=s.status)
            if s.status != PASSED:
                raise FacegateError("liveness_failed", "the liveness session did not pass", status=s.status,
                                    reasons=(s.result or {}).get("reasons", []))
            if self.clock() > (s.valid_until or 0):
                raise FacegateError("liveness_session_expired", "the liveness result is too old to use")
            s.status = CONSUMED     # used even when the subject is wrong: no second try with it
            if s.subject_id and subject_id and s.subject_id != subject_id:
                raise FacegateError("liveness_failed", "the liveness session was opened for another subject")
            return s

    def _expire(self, now: float) -> None:
        keep = max(self.settings.liveness_session_ttl_s, self.settings.liveness_result_ttl_s) * 2
        for sid in [sid for sid, s in self._sessions.items() if now - s.created_at > keep]:
            del self._sessions[sid]
