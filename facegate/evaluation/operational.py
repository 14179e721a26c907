"""Operational evaluation: each labelled pair decided exactly as ``POST /v1/verify`` decides it.

``facegate eval`` (:mod:`facegate.evaluation.accuracy`) measures the algorithm: every photo's
central face, no quality gate, two outcomes. The service decides differently, and this module
reports what its decisions are worth, in ISO/IEC 19795-1 terms:

* the pair's first photo is the **enrolment** (``Gallery.enrol``: ``FaceEngine.face`` with policy
  ``single``, the enrolment face size ``min_enrol_face_px`` and the quality gate) and its second
  the **probe** (``verify``: policy ``single``, ``min_verify_face_px``, the quality gate);
* a pair where either photo is refused (``no_face``, ``multiple_faces``, ``face_too_small``,
  ``low_quality``, ...) is a **failure to acquire**;
* an acquired pair is decided by :func:`facegate.matching.decisions.decide_1to1` at the active
  1:1 operating point (``target_fmr``, :func:`~facegate.matching.decisions.threshold` with the
  probe's quality, so a table with quality bands applies the probe's band) with the service's
  review rules (``ReviewRules.from_settings``: the review band under the threshold and
  ``review_min_quality`` on the probe): ``match``, ``no_match`` or ``manual_review``.

Rates (``fta_rate`` and the rest are over pairs; a pair is one verification transaction)::

    fta_rate    = pairs not acquired / pairs
    fmr         = impostor pairs decided "match" / acquired impostor pairs
    fnmr        = genuine pairs decided "no_match" / acquired genuine pairs
    review_rate = acquired pairs decided "manual_review" / acquired pairs
    gfar        = impostor pairs decided "match" / impostor pairs            (= FMR x (1 - FTA))
    gfrr        = (genuine pairs not acquired + genuine pairs decided "no_match") / genuine pairs
                                                                             (= FTA + (1 - FTA) x FNMR)

A manual review is neither an acceptance nor a rejection: it is counted in ``review_rate`` (and
by label in ``genuine_reviews`` / ``impostor_reviews``), not in the error rates.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.engine import MIN_QUALITY
from facegate.errors import FacegateError
from facegate.evaluation.pairs import PairSet
from facegate.matching.decisions import ReviewRules, decide_1to1, threshold
from facegate.matching.scores import similarity

ROLES = ("enrol", "probe")


@dataclass(frozen=True)
class Sample:
    """One photo as the service acquires it in one role: an embedding and the probe quality, or
    the error code it was refused with."""
    embedding: np.ndarray | None
    quality: float | None
    error: str | None = None

    @property
    def acquired(self) -> bool:
        return self.error is None


def acquire(engine, data: bytes, role: str) -> Sample:
    """The photo through the service's gate for ``role`` (``enrol``: ``Gallery.enrol``; ``probe``:
    ``workflows.verification.verify``)."""
    s = engine.settings
    try:
        if role == "enrol":
            face = engine.face(data, policy="single", min_face_px=s.min_enrol_face_px, min_quality=MIN_QUALITY)
        else:
            face = engine.face(data, policy="single", min_quality=MIN_QUALITY)
    except FacegateError as exc:
        return Sample(None, None, exc.code)
    return Sample(face.embedding, float(face.quality.score))


def acquire_images(engine, images_dir: Path, pairset: PairSet, progress: bool = False) -> dict:
    """(name, role) -> Sample for every photo in the role(s) the pairs use it in."""
    wanted = sorted({(p.a, "enrol") for p in pairset.pairs} | {(p.b, "probe") for p in pairset.pairs})
    out: dict[tuple[str, str], Sample] = {}
    for i, (name, role) in enumerate(wanted):
        try:
            data = (Path(images_dir) / name).read_bytes()
        except FileNotFoundError:
            out[(name, role)] = Sample(None, None, "missing_file")
            continue
        out[(name, role)] = acquire(engine, data, role)
        if progress and (i + 1) % 500 == 0:
            print(f"  acquired {i + 1}/{len(wanted)}", file=sys.stderr, flush=True)
    return out


def _rate(n: int, d: int) -> float | None:
    return round(n / d, 8) if d else None


def decide_pairs(engine, pairset: PairSet, samples: dict, fmr: float | None = None) -> dict:
    """The operational report (module docstring) of ``pairset`` from acquired ``samples``."""
    settings = engine.settings
    rules = ReviewRules.from_settings(settings)
    point = threshold(engine.operating_points, fmr or settings.target_fmr)
    counts = Counter()
    failures = Counter()
    reasons = Counter()
    bands = Counter()
    genuine_scores, impostor_scores = [], []
    for p in pairset.pairs:
        label = "genuine" if p.same else "impostor"
        counts[label] += 1
        a, b = samples[(p.a, "enrol")], samples[(p.b, "probe")]
        if not (a.acquired and b.acquired):
            counts[f"{label}_not_acquired"] += 1
            failures.update(["enrol:" + a.error] if a.error else [])
            failures.update(["probe:" + b.error] if b.error else [])
            continue
        score = similarity(a.embedding, b.embedding)
        probe_point = threshold(engine.operating_points, fmr or settings.target_fmr, b.quality)
        bands[probe_point.table] += 1
        decision = decide_1to1(score, probe_point, b.quality, rules)
        counts[f"{label}_{decision.decision}"] += 1
        reasons.update(decision.reasons)
        (genuine_scores if p.same else impostor_scores).append(score)
    n = len(pairset.pairs)
    g, i = counts["genuine"], counts["impostor"]
    g_acq, i_acq = g - counts["genuine_not_acquired"], i - counts["impostor_not_acquired"]
    acquired = g_acq + i_acq
    fm, fnm = counts["impostor_match"], counts["genuine_no_match"]
    reviews = counts["genuine_manual_review"] + counts["impostor_manual_review"]
    return {
        "mode": "operational",
        "pairs": n,
        "acquired_pairs": acquired,
        "fta_rate": _rate(n - acquired, n),
        "false_matches": fm,
        "false_non_matches": fnm,
        "manual_reviews": reviews,
        "fmr": _rate(fm, i_acq),
        "fnmr": _rate(fnm, g_acq),
        "review_rate": _rate(reviews, acquired),
        "gfar": _rate(fm, i),
        "gfrr": _rate(counts["genuine_not_acquired"] + fnm, g),
        "threshold": round(point.threshold, 6),
        "operating_point": point.as_dict(),
        "probes_by_table": dict(sorted(bands.items())),
        "thresholds_by_quality": [{"min_quality": b["min_quality"], "max_quality": b.get("max_quality"),
                                   "threshold": round(threshold(engine.operating_points, fmr or settings.target_fmr,
                                                                b["min_quality"]).threshold, 6)}
                                  for b in getattr(engine.operating_points, "quality_bands", ())],
        "review_band": rules.band,
        "review_min_quality": rules.min_quality,
        "genuine_pairs": g,
        "impostor_pairs": i,
        "genuine_acquired": g_acq,
        "impostor_acquired": i_acq,
        "genuine_matches": counts["genuine_match"],
        "genuine_reviews": counts["genuine_manual_review"],
        "impostor_reviews": counts["impostor_manual_review"],
        "true_non_matches": counts["impostor_no_match"],
        "review_reasons": dict(sorted(reasons.items())),
        "fta_genuine_rate": _rate(counts["genuine_not_acquired"], g),
        "fta_impostor_rate": _rate(counts["impostor_not_acquired"], i),
        "acquisition_failures": dict(sorted(failures.items())),
        "photos_refused": {role: dict(sorted(Counter(s.error for (_, r), s in samples.items()
                                                     if r == role and s.error).items())) for role in ROLES},
        "highest_acquired_impostor_score": round(max(impostor_scores), 6) if impostor_scores else None,
        "lowest_acquired_genuine_score": round(min(genuine_scores), 6) if genuine_scores else None,
    }
