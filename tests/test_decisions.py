"""The decision rules of facegate.matching, table by table, without any model."""
import numpy as np
import pytest

from facegate.errors import FacegateError
from facegate.matching.decisions import (Candidate, OperatingPoint, ReviewRules, capture_reasons, decide_1to1,
                                         decide_1toN, review_search, same_person, threshold, tightened)
from facegate.matching.operating_points import OperatingPoints

POINTS = OperatingPoints([{"fmr": 1e-3, "threshold": 0.33}, {"fmr": 1e-4, "threshold": 0.41},
                          {"fmr": 1e-5, "threshold": 0.47}], "table.json")
POINT = OperatingPoint(0.41, 1e-4, "table.json")
RULES = ReviewRules(band=0.05, min_quality=0.35)


@pytest.mark.parametrize("fmr, expected", [
    (1e-4, (0.41, 1e-4)),
    (5e-4, (0.41, 1e-4)),           # never looser than asked
    (1e-3, (0.33, 1e-3)),
    (1e-6, (0.47, 1e-5)),           # stricter than any: the strictest there is
])
def test_threshold_is_the_calibrated_point_not_looser_than_asked(fmr, expected):
    point = threshold(POINTS, fmr)
    assert (point.threshold, point.fmr, point.table) == (*expected, "table.json")


def test_a_pack_without_calibration_makes_no_decision():
    with pytest.raises(FacegateError) as e:
        threshold(None, 1e-4)
    assert e.value.code == "model_unavailable"
    with pytest.raises(FacegateError) as e:
        same_person(None, 1e-3, np.ones(4), np.ones(4))
    assert e.value.code == "model_unavailable"


@pytest.mark.parametrize("score, quality, status, decision, reasons", [
    (0.60, 0.9, "active", "match", ()),
    (0.41, 0.9, "active", "match", ()),                                  # at the threshold: a match
    (0.30, 0.9, "active", "no_match", ()),
    (0.35, 0.9, "active", "no_match", ()),                               # under the band
    (0.37, 0.9, "active", "manual_review", ("score_near_threshold",)),
    (0.40, 0.9, "active", "manual_review", ("score_near_threshold",)),
    (0.60, 0.2, "active", "manual_review", ("low_quality",)),
    (0.10, 0.2, "active", "manual_review", ("low_quality",)),            # a non-match may be the camera's fault
    (0.60, 0.9, "deceased", "manual_review", ("subject_deceased",)),
    (0.60, 0.9, "suspended", "manual_review", ("subject_suspended",)),
    (0.10, 0.9, "deceased", "no_match", ()),                             # status matters only for a match
    (0.40, 0.2, "active", "manual_review", ("low_quality", "score_near_threshold")),
])
def test_one_to_one(score, quality, status, decision, reasons):
    d = decide_1to1(score, POINT, quality, RULES, subject_status=status)
    assert (d.decision, d.reasons, d.match) == (decision, reasons, decision == "match")
    assert d.as_dict() == {"match": decision == "match", "decision": decision, "review_reasons": list(reasons),
                           "score": score, "threshold": 0.41, "fmr": 1e-4}


def test_more_review_reasons_never_leave_a_match():
    d = decide_1to1(0.9, POINT, 0.9, RULES)
    assert d.under_review() is d
    reviewed = d.under_review("capture_face_mismatch")
    assert (reviewed.decision, reviewed.reasons, reviewed.match) == ("manual_review", ("capture_face_mismatch",), False)


def ranked(*scores, statuses=None):
    statuses = statuses or ["active"] * len(scores)
    return [Candidate(f"S{i}", s, face_id=i, status=st) for i, (s, st) in enumerate(zip(scores, statuses))]


@pytest.mark.parametrize("scores, decision, subject, margin, n_candidates", [
    ((0.70, 0.30), "match", "S0", 0.40, 1),
    ((0.70, 0.66), "ambiguous", None, 0.04, 2),       # both above, too close
    ((0.44, 0.40), "ambiguous", None, 0.04, 1),       # the second counts even under the threshold
    ((0.70, 0.60), "match", "S0", 0.10, 2),
    ((0.40, 0.10), "no_match", None, 0.30, 0),
    ((0.70,), "match", "S0", None, 1),                # one subject in the gallery
    ((), "no_match", None, None, 0),
])
def test_one_to_many_margin_rule(scores, decision, subject, margin, n_candidates):
    found = decide_1toN(ranked(*scores), POINT, required_margin=0.05, top_k=5)
    assert (found.decision, found.subject_id, len(found.candidates)) == (decision, subject, n_candidates)
    assert (found.margin is None) == (margin is None)
    if margin is not None:
        assert found.margin == pytest.approx(margin)


def test_one_to_many_keeps_top_k_candidates_above_the_threshold():
    found = decide_1toN(ranked(0.9, 0.8, 0.7, 0.6, 0.2), POINT, 0.05, top_k=2)
    assert [c.subject_id for c in found.candidates] == ["S0", "S1"]
    assert found.as_dict()["best_score"] == 0.9


@pytest.mark.parametrize("scores, statuses, quality, decision, reasons", [
    ((0.70, 0.30), None, 0.9, "match", ()),
    ((0.70, 0.66), None, 0.9, "manual_review", ("ambiguous_margin",)),
    ((0.70, 0.30), None, 0.2, "manual_review", ("low_quality",)),
    ((0.70, 0.30), ["deceased", "active"], 0.9, "manual_review", ("subject_deceased",)),
    ((0.39, 0.10), None, 0.9, "manual_review", ("score_near_threshold",)),    # the review band holds for 1:N too
    ((0.20, 0.10), None, 0.9, "no_match", ()),
    ((0.70, 0.66), None, 0.2, "manual_review", ("ambiguous_margin", "low_quality")),   # reasons add up
])
def test_a_kiosk_search_follows_the_one_to_one_review_rules(scores, statuses, quality, decision, reasons):
    found = decide_1toN(ranked(*scores, statuses=statuses), POINT, 0.05, top_k=5)
    d = review_search(found, quality, RULES)
    assert (d.decision, d.reasons) == (decision, reasons)


def test_a_search_of_an_empty_gallery_scores_nothing():
    d = review_search(decide_1toN([], POINT, 0.05, 5), 0.9, RULES)
    assert (d.decision, d.score, d.as_dict()["score"]) == ("no_match", None, None)


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("capture, still, reasons", [
    (unit([1, 0, 0]), unit([1, 0.1, 0]), ()),                              # cosine 0.995
    (unit([1, 0, 0]), unit([0.3, 1, 0]), ("capture_face_mismatch",)),      # cosine 0.29 < 0.33
    (None, unit([1, 0, 0]), ()),                                           # nothing to compare
    (unit([1, 0, 0]), None, ()),
])
def test_the_capture_and_its_still_must_show_one_person(capture, still, reasons):
    assert capture_reasons(POINTS, 1e-3, capture, still) == reasons


@pytest.mark.parametrize("configured, requested, used", [(1e-4, None, 1e-4), (1e-4, 1e-4, 1e-4), (1e-4, 1e-6, 1e-6)])
def test_a_request_may_tighten_the_operating_point(configured, requested, used):
    assert tightened(configured, requested) == used


@pytest.mark.parametrize("requested", [2e-4, 1e-2, 0.5])
def test_a_request_may_not_loosen_the_operating_point(requested):
    with pytest.raises(FacegateError) as e:
        tightened(1e-4, requested)
    assert e.value.code == "invalid_request" and e.value.detail["max_fmr"] == 1e-4
