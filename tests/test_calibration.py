import numpy as np
import pytest

from facegate.matching.operating_points import OperatingPoints, compute_table, threshold_at_fmr
from facegate.evaluation.accuracy import auc, best_threshold, kfold_accuracy


def test_threshold_at_fmr_allows_exactly_the_budget():
    impostor = np.arange(1000) / 1000.0          # 0.000 ... 0.999
    t = threshold_at_fmr(impostor, 0.01)         # at most 10 of 1000 may reach t
    assert (impostor >= t).sum() == 10
    assert (impostor >= np.nextafter(t, -1)).sum() == 11    # and it is the smallest such threshold
    t = threshold_at_fmr(impostor, 1e-3)
    assert (impostor >= t).sum() == 1
    t = threshold_at_fmr(impostor, 1e-5)         # fewer than 1/FMR pairs: nobody may pass
    assert (impostor >= t).sum() == 0


def test_compute_table_reports_fnmr_at_each_point():
    rng = np.random.default_rng(0)
    impostor = rng.normal(0, 0.1, 100_000)
    genuine = rng.normal(0.6, 0.1, 2_000)
    table = compute_table(genuine, impostor)
    assert [p["fmr"] for p in table] == [1e-2, 1e-3, 1e-4, 1e-5]
    thresholds = [p["threshold"] for p in table]
    assert thresholds == sorted(thresholds)                  # stricter FMR, higher threshold
    for p in table:
        assert p["measured_fmr"] <= p["fmr"]
        assert p["fnmr"] == pytest.approx((genuine < p["threshold"]).mean())
    assert table[-1]["reliable"] is False                    # 1e-5 * 1e5 = 1 pair


def test_operating_point_lookup():
    ops = OperatingPoints([{"fmr": 1e-2, "threshold": 0.2}, {"fmr": 1e-3, "threshold": 0.3},
                           {"fmr": 1e-4, "threshold": 0.4}], "test")
    assert ops.threshold_for(1e-3) == (0.3, 1e-3)
    assert ops.threshold_for(5e-4) == (0.4, 1e-4)            # never looser than asked
    assert ops.threshold_for(1e-6) == (0.4, 1e-4)            # strictest available
    assert ops.fmr_for_score(0.35) == 1e-3
    assert ops.fmr_for_score(0.1) is None


def test_kfold_accuracy_counts_failed_pairs_as_errors():
    scores = np.array([0.9, 0.8, 0.1, 0.2] * 5)
    same = np.array([True, True, False, False] * 5)
    fold = np.repeat(np.arange(5), 4)
    ok = np.ones(20, bool)
    acc, std, per_fold = kfold_accuracy(scores, same, fold, ok)
    assert acc == 1.0 and std == 0.0
    ok[0] = False                                            # a photo without a face
    acc, _, per_fold = kfold_accuracy(scores, same, fold, ok)
    assert per_fold[0] == 0.75 and acc == pytest.approx(0.95)


def test_best_threshold_and_auc():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    same = np.array([False, False, False, True, True, True])
    t = best_threshold(scores, same, np.ones(6, bool))
    assert 0.3 < t <= 0.7
    assert auc(scores[same], scores[~same]) == 1.0
    assert auc(np.array([0.5]), np.array([0.5])) == 0.5
