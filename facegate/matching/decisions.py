"""Turning a similarity score and a face quality into match / no_match / manual_review.

Face matching must never be the only way in: where the evidence is weak the answer is
``manual_review`` (a person checks the documents), not a hard yes or no:

- the score lies in the band ``[threshold - review_band, threshold)`` just under the threshold;
- the probe's quality score is under ``review_min_quality`` (a match is not trusted, a
  non-match may be the camera's fault);
- the face matches a subject who is not ``active`` (suspended or deceased): never an
  automatic match.
"""
from __future__ import annotations


def decide(engine, settings, score: float, quality: float, fmr: float | None = None,
           subject_status: str = "active", points=None) -> dict:
    """The decision at ``fmr`` on the engine's operating points, or on ``points`` (e.g. the
    ID-card chip photo table)."""
    if points is None:
        base = engine.decide(score, fmr)
    else:
        threshold, point_fmr = points.threshold_for(fmr or settings.target_fmr)
        base = {"score": round(float(score), 6), "match": bool(score >= threshold),
                "threshold": round(threshold, 6), "fmr": point_fmr}
    threshold = base["threshold"]
    reasons = []
    if quality < settings.review_min_quality:
        reasons.append("low_quality")
    if threshold - settings.review_band <= score < threshold:
        reasons.append("score_near_threshold")
    if subject_status != "active" and base["match"]:
        reasons.append(f"subject_{subject_status}")
    if reasons:
        decision = "manual_review"
    else:
        decision = "match" if base["match"] else "no_match"
    return {"match": decision == "match", "decision": decision, "review_reasons": reasons,
            "score": base["score"], "threshold": threshold, "fmr": base["fmr"],
            "review_band": settings.review_band}
