"""The 1:N second opinion: an index shortlist rescored with the mean of the pack's embedder's and
its second model's (SFace) cosines, where every shortlisted template has its second template.

The fused rule holds for a whole search or not at all: its scores live on another scale, with
their own calibrated table (``<pack>-fused-sface.json``), so one subject scored fused and another
single could not be ranked against each other. A search whose shortlist holds a template without
a second one (enrolled before, backfill not done) is decided by the embedder alone, and says why.
Figures: benchmarks/results/gallery.md ("second opinion"), benchmarks/results/sface_second_opinion.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegate.matching.decisions import Candidate
from facegate.matching.operating_points import OperatingPoints
from facegate.matching.scores import exact_scores


@dataclass(frozen=True)
class Ranking:
    """Subjects ranked best first, and which scores rank them: ``single`` (the pack's embedder)
    or ``fused`` (mean of its and the second opinion's cosines); ``note``: why not fused."""
    candidates: list[Candidate]
    rule: str = "single"
    note: str | None = None


def rescore(store, engine, rows: list[dict], scores: np.ndarray,
            second: np.ndarray | None) -> tuple[np.ndarray, str, str | None]:
    """(scores, rule, note) for the shortlist ``rows`` (templates with ``face_id``) whose embedder
    scores are ``scores``, given the probe's second-opinion embedding ``second``."""
    model = engine.second_model
    if model is None:
        return scores, "single", None
    if engine.fused_points is None:
        return scores, "single", f"no fused calibration table for {model}"
    if second is None:
        return scores, "single", f"the probe has no {model} embedding"
    family = store.family_embeddings([r["face_id"] for r in rows], engine.pack_id, model)
    missing = sum(r["face_id"] not in family for r in rows)
    if missing:
        return scores, "single", f"{missing} shortlisted template(s) have no {model} template yet " \
                                 "(facegate templates backfill)"
    return (scores + exact_scores([family[r["face_id"]] for r in rows], second)) / 2, "fused", None


def points_for(engine, rule: str) -> OperatingPoints | None:
    """The table a rule's scores are decided with."""
    return engine.fused_points if rule == "fused" else engine.operating_points


def decision_fmr(engine, rule: str, fmr: float) -> float:
    """The FMR a search asked at ``fmr`` is decided at: the fused table's own 1:N default
    (its ``identify_fmr`` key) when that is stricter, else ``fmr`` (never looser than asked)."""
    if rule == "fused" and engine.fused_points is not None and engine.fused_points.identify_fmr:
        return min(float(fmr), float(engine.fused_points.identify_fmr))
    return fmr
