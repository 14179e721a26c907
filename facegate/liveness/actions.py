"""Detecting challenge actions in a sequence of frame observations.

Thresholds were set on the traces of the live clips in ``../shared/data/face-videos`` (see
``benchmarks/liveness.py``):

- blink: both eyes read closed by ``fr_eye`` for >= 2 consecutive frames and at most 0.5 s
  (longer is eyes kept shut, not a blink), with an open frame before and after, the head within
  12 degrees of its neutral pitch (eyelids lowered while looking down read closed too), confirmed by the eye aspect ratio dropping to <= 85 % of the open-eye
  median, or by ``fr_eye`` being sure (both eyes P(open) < 0.15 on >= 2 frames: behind
  glasses the 68 points barely close). One closed eye alone is not used: it reads closed for
  whole clips.
- turn_left / turn_right: yaw moves >= 15 degrees from the neutral (first 0.5 s) yaw for
  >= 3 frames. Left/right are the subject's own, for an unmirrored capture: turning to one's
  left makes the yaw negative (the nose moves to the image's right).
- nod: pitch moves >= 10 degrees from neutral for >= 3 frames and comes back within 5 degrees.
- open_mouth: inner-mouth aspect ratio >= 0.45 and >= neutral + 0.25 for >= 3 frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegate.liveness.tracker import FrameObservation

ACTIONS = ("blink", "turn_left", "turn_right", "open_mouth", "nod")

NEUTRAL_SECONDS = 0.5
BLINK_MIN_FRAMES = 2
BLINK_EAR_RATIO = 0.85
BLINK_SURE_OPEN = 0.15      # both eyes below this P(open): closed without EAR confirmation
BLINK_MAX_SECONDS = 0.5
BLINK_MAX_PITCH = 12.0      # degrees from the neutral pitch
TURN_DEGREES = 15.0
NOD_DEGREES = 10.0
NOD_RETURN_DEGREES = 5.0
SUSTAIN_FRAMES = 3
MOUTH_OPEN_MAR = 0.45
MOUTH_OPEN_DELTA = 0.25


@dataclass
class ActionDetection:
    action: str
    start: float
    end: float
    peak: float      # the measured extreme: degrees from neutral, MAR, or minimum EAR ratio

    def as_dict(self) -> dict:
        return {"action": self.action, "detected": True, "start": round(self.start, 3),
                "end": round(self.end, 3), "peak": round(self.peak, 3)}


@dataclass
class Neutral:
    yaw: float
    pitch: float
    mar: float
    ear_open: float

    @classmethod
    def of(cls, obs: list[FrameObservation]) -> "Neutral":
        faced = [o for o in obs if o.has_face]
        if not faced:
            return cls(0.0, 0.0, 0.0, 0.3)
        t0 = faced[0].t
        first = [o for o in faced if o.t - t0 <= NEUTRAL_SECONDS] or faced[:1]
        open_ear = [o.ear for o in faced if not o.both_eyes_closed]
        return cls(float(np.median([o.yaw for o in first])), float(np.median([o.pitch for o in first])),
                   float(np.median([o.mar for o in first])),
                   float(np.median(open_ear)) if open_ear else float(np.median([o.ear for o in faced])))


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(start, end) inclusive index ranges where ``flags`` is True."""
    runs, start = [], None
    for i, f in enumerate(flags + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def find_action(action: str, obs: list[FrameObservation], neutral: Neutral, after: float = -1.0) -> ActionDetection | None:
    """The first occurrence of ``action`` that starts after time ``after``."""
    seq = [o for o in obs if o.has_face]
    if action == "blink":
        closed = [o.both_eyes_closed for o in seq]
        for s, e in _runs(closed):
            if e - s + 1 < BLINK_MIN_FRAMES or s == 0 or e == len(seq) - 1 or seq[s].t <= after:
                continue
            if seq[e].t - seq[s].t > BLINK_MAX_SECONDS:
                continue
            if max(abs(o.pitch - neutral.pitch) for o in seq[s:e + 1]) > BLINK_MAX_PITCH:
                continue
            ratio = min(o.ear for o in seq[s:e + 1]) / max(neutral.ear_open, 1e-6)
            sure = sum(max(o.eyes_open) < BLINK_SURE_OPEN for o in seq[s:e + 1]) >= BLINK_MIN_FRAMES
            if ratio <= BLINK_EAR_RATIO or sure:
                return ActionDetection(action, seq[s].t, seq[e].t, ratio)
        return None
    if action in ("turn_left", "turn_right", "nod"):
        if action == "nod":
            dev = [abs(o.pitch - neutral.pitch) for o in seq]
            need = NOD_DEGREES
        else:
            sign = -1.0 if action == "turn_left" else 1.0
            dev = [sign * (o.yaw - neutral.yaw) for o in seq]
            need = TURN_DEGREES
        for s, e in _runs([d >= need for d in dev]):
            if e - s + 1 < SUSTAIN_FRAMES or seq[s].t <= after:
                continue
            if action == "nod" and not any(d <= NOD_RETURN_DEGREES for d in dev[e + 1:]):
                continue
            return ActionDetection(action, seq[s].t, seq[e].t, float(max(dev[s:e + 1])))
        return None
    if action == "open_mouth":
        need = max(MOUTH_OPEN_MAR, neutral.mar + MOUTH_OPEN_DELTA)
        for s, e in _runs([o.mar >= need for o in seq]):
            if e - s + 1 < SUSTAIN_FRAMES or seq[s].t <= after:
                continue
            return ActionDetection(action, seq[s].t, seq[e].t, float(max(o.mar for o in seq[s:e + 1])))
        return None
    raise ValueError(f"unknown action {action!r}")


def match_challenge(challenge: list[str], obs: list[FrameObservation]) -> list[dict]:
    """Each asked action, searched for only among occurrences that start after the previous
    action started (the asked order; an action may begin while the previous one ends)."""
    neutral = Neutral.of(obs)
    out, after = [], -1.0
    for action in challenge:
        found = find_action(action, obs, neutral, after)
        if found is None:
            out.append({"action": action, "detected": False})
            after = float("inf")
        else:
            out.append(found.as_dict())
            after = found.start
    return out
