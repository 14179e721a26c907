"""Where similarity scores become decisions: pure functions, frozen answers, no I/O.

Face matching must never be the only way in. Where the evidence is weak the answer is
``manual_review`` (a person checks the documents), not a hard yes or no:

- the score lies in the band ``[threshold - review_band, threshold)`` just under the threshold;
- the probe's quality score is under ``review_min_quality`` (a match is not trusted, a
  non-match may be the camera's fault);
- the face matches a subject who is not ``active`` (suspended or deceased): never an
  automatic match;
- the still photo of a liveness capture is not the person who did the capture
  (``capture_face_mismatch``): a live person answered the challenge for someone else's photo.

A 1:N search first ranks subjects (:func:`decide_1toN`: the best must beat the second by a
margin), and a kiosk's search then goes through the same review rules (:func:`review_search`).
Every threshold comes from a calibrated table (:func:`threshold`); a pack without one makes no
decisions (``model_unavailable``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from facegate.errors import FacegateError
from facegate.matching.operating_points import OperatingPoints
from facegate.matching.scores import similarity
from facegate.vocab import Decision as DecisionName
from facegate.vocab import Identification as IdentificationName

CAPTURE_FACE_MISMATCH = "capture_face_mismatch"


@dataclass(frozen=True)
class OperatingPoint:
    """A calibrated threshold, the false-match rate it was calibrated at, and its table."""
    threshold: float
    fmr: float
    table: str

    def matches(self, score: float) -> bool:
        return score >= self.threshold

    def as_dict(self) -> dict:
        return {"table": self.table, "threshold": round(self.threshold, 6), "fmr": self.fmr}


def threshold(points: OperatingPoints | None, fmr: float, quality: float | None = None) -> OperatingPoint:
    """The calibrated point with the largest FMR not above ``fmr`` (never looser than asked).

    ``quality``: the probe's quality score. A table calibrated per quality band answers with the
    probe's band (stricter for poorly exposed or otherwise weak captures, where impostor scores
    run highest); without a quality, or without bands, the table's all-probes point. The band is
    named in the point's ``table`` (``...json#quality<0.5``)."""
    if points is None:
        raise FacegateError("model_unavailable", "this model pack has no calibration; run `facegate calibrate` for it")
    t, point_fmr = points.threshold_for(fmr, quality)
    return OperatingPoint(float(t), float(point_fmr), points.source_for(quality))


def tightened(configured: float, requested: float | None) -> float:
    """The false-match rate a decision is made at: the configured one, or a stricter one the
    request asks for. A looser point would let any caller trade false matches for convenience
    (at FMR 0.5 a 1:N search names someone for most strangers): that is configuration."""
    if requested is None:
        return configured
    if requested > configured * (1 + 1e-9):
        raise FacegateError("invalid_request", f"fmr {requested:g} is looser than this service's operating point "
                            f"{configured:g}; a request may only ask for a stricter one", field="fmr",
                            max_fmr=configured)
    return requested


@dataclass(frozen=True)
class ReviewRules:
    """When a decision goes to a person instead of being made automatically."""
    band: float            # scores this far under the threshold
    min_quality: float     # probes of lower quality

    @classmethod
    def from_settings(cls, settings) -> "ReviewRules":
        return cls(float(settings.review_band), float(settings.review_min_quality))


@dataclass(frozen=True)
class Decision:
    decision: DecisionName
    reasons: tuple[str, ...]
    score: float | None            # None: a search that found nobody to score
    point: OperatingPoint

    @property
    def match(self) -> bool:
        return self.decision == "match"

    def under_review(self, *reasons: str) -> "Decision":
        """The same decision sent to a person for more ``reasons`` (none: unchanged)."""
        if not reasons:
            return self
        return replace(self, decision="manual_review", reasons=self.reasons + tuple(reasons))

    def as_dict(self) -> dict:
        return {"match": self.match, "decision": self.decision, "review_reasons": list(self.reasons),
                "score": None if self.score is None else round(float(self.score), 6), "threshold": round(self.point.threshold, 6),
                "fmr": self.point.fmr}


def _review(score: float, point: OperatingPoint, quality: float, rules: ReviewRules) -> list[str]:
    reasons = []
    if quality < rules.min_quality:
        reasons.append("low_quality")
    if point.threshold - rules.band <= score < point.threshold:
        reasons.append("score_near_threshold")
    return reasons


def decide_1to1(score: float, point: OperatingPoint, quality: float, rules: ReviewRules,
                subject_status: str = "active") -> Decision:
    """match / no_match at ``point``, or manual_review for the reasons in the module docstring."""
    matched = point.matches(score)
    reasons = _review(score, point, quality, rules)
    if subject_status != "active" and matched:
        reasons.append(f"subject_{subject_status}")
    decision = "manual_review" if reasons else ("match" if matched else "no_match")
    return Decision(decision, tuple(reasons), float(score), point)


@dataclass(frozen=True)
class Candidate:
    """A subject ranked by its best exact score against the probe."""
    subject_id: str
    score: float
    face_id: int | None = None
    status: str = "active"

    def as_dict(self) -> dict:
        return {"subject_id": self.subject_id, "score": round(float(self.score), 6), "face_id": self.face_id,
                "status": self.status}


@dataclass(frozen=True)
class Identification:
    """A 1:N answer. ``candidates``: subjects at or above the threshold, best first."""
    decision: IdentificationName
    candidates: tuple[Candidate, ...]
    best: Candidate | None          # the best subject, above the threshold or not
    margin: float | None            # best minus second-best score (None with fewer than two)
    required_margin: float
    point: OperatingPoint
    rule: str = "single"            # "fused": scores are the mean of two models' cosines (a second opinion)
    rule_note: str | None = None    # why the single-model rule was used where a second opinion exists

    @property
    def subject_id(self) -> str | None:
        return self.candidates[0].subject_id if self.decision == "match" else None

    def as_dict(self) -> dict:
        return {"decision": self.decision, "subject_id": self.subject_id,
                "candidates": [c.as_dict() for c in self.candidates],
                "threshold": round(self.point.threshold, 6), "fmr": self.point.fmr,
                "margin": None if self.margin is None else round(self.margin, 6),
                "required_margin": self.required_margin,
                "best_score": None if self.best is None else round(self.best.score, 6),
                "rule": self.rule, "rule_note": self.rule_note}


def decide_1toN(ranked: Sequence[Candidate], point: OperatingPoint, required_margin: float,
                top_k: int, rule: str = "single", rule_note: str | None = None) -> Identification:
    """The margin rule over subjects ranked best first.

    ``rule`` names the scores: ``single`` (the pack's embedder) or ``fused`` (the mean of its and
    the second opinion's cosines), and ``point`` must come from the matching table.
    ``match`` when the best subject is at or above the threshold and beats the second-best
    (above the threshold or not) by at least ``required_margin``; ``ambiguous`` when it is above
    the threshold but the margin is smaller; ``no_match`` when nobody reaches the threshold."""
    above = [c for c in ranked if point.matches(c.score)]
    margin = ranked[0].score - ranked[1].score if len(ranked) >= 2 else None
    if not above:
        decision = "no_match"
    elif margin is not None and margin < required_margin:
        decision = "ambiguous"
    else:
        decision = "match"
    return Identification(decision, tuple(above[:top_k]), ranked[0] if ranked else None, margin,
                          float(required_margin), point, rule, rule_note)


def review_search(found: Identification, quality: float, rules: ReviewRules) -> Decision:
    """A 1:N search turned into a 1:1-shaped decision about its best subject, with the same
    review rules as :func:`decide_1to1` plus ``ambiguous_margin``."""
    score = found.best.score if found.best is not None else None
    reasons = ["ambiguous_margin"] if found.decision == "ambiguous" else []
    reasons += _review(float("-inf") if score is None else score, found.point, quality, rules)
    if found.decision == "match" and found.best.status != "active":
        reasons.append(f"subject_{found.best.status}")
    decision = "manual_review" if reasons else ("match" if found.decision == "match" else "no_match")
    return Decision(decision, tuple(reasons), score, found.point)


def same_person(points: OperatingPoints | None, fmr: float, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two embeddings of one capture show the same person, at the point for ``fmr``."""
    return threshold(points, fmr).matches(similarity(a, b))


def capture_reasons(points: OperatingPoints | None, fmr: float, capture: np.ndarray | None,
                    still: np.ndarray | None) -> tuple[str, ...]:
    """Review reasons from comparing a liveness capture's face with the still sent beside it:
    ``("capture_face_mismatch",)`` when they are different people, else none."""
    if capture is None or still is None or same_person(points, fmr, capture, still):
        return ()
    return (CAPTURE_FACE_MISMATCH,)
