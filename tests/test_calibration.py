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


# ---------------------------------------------------------------- several sets, populations, quality bands
import json
from types import SimpleNamespace

from facegate.errors import FacegateError
from facegate.evaluation.accuracy import calibrate_sets, evaluate
from facegate.evaluation.pairs import PairSet, Pair, read_lfw_pairs
from facegate.matching.decisions import threshold
from facegate.matching.operating_points import combine_tables, populations


def test_combined_table_takes_the_strictest_threshold_per_target():
    rng = np.random.default_rng(1)
    wide = rng.normal(0, 0.1, 200_000)            # set A: LFW-like impostors
    tight = rng.normal(0.1, 0.12, 50_000)         # set B: a population whose impostors score higher
    genuine = rng.normal(0.7, 0.1, 3_000)
    points = combine_tables([("a", genuine, wide), ("b", genuine, tight)], fmrs=(1e-2, 1e-3))
    for p, fmr in zip(points, (1e-2, 1e-3)):
        own = {k: threshold_at_fmr(v, fmr) for k, v in (("a", wide), ("b", tight))}
        assert p["threshold"] == pytest.approx(max(own.values()), abs=1e-6)
        assert p["decided_by"] == max(own, key=own.get)
        for name, scores in (("a", wide), ("b", tight)):       # the stated FMR holds on every set
            assert p["by_set"][name]["measured_fmr"] <= fmr
            assert p["by_set"][name]["measured_fmr"] == pytest.approx((scores >= p["threshold"]).mean())
        assert p["fnmr"] == pytest.approx((genuine < p["threshold"]).mean())


def _identity_set(rng, people: int, per: int, spread: float, shift: float = 0.0):
    """Embeddings clustered by identity, and a quality per photo (half of them low)."""
    names, emb, ids, quality = [], {}, {}, {}
    centres = rng.normal(size=(people, 32))
    for p in range(people):
        for k in range(per):
            name = f"p{p}/{k}.jpg"
            v = centres[p] + rng.normal(scale=spread, size=32) + shift
            emb[name] = (v / np.linalg.norm(v)).astype(np.float32)
            ids[name] = f"p{p}"
            quality[name] = 0.3 if k % 2 else 0.9
            names.append(name)
    pairs = [Pair(a, b, ids[a] == ids[b], 0) for a, b in zip(names[::2], names[1::2])]
    return PairSet(pairs, 1, ids), emb, quality


def test_calibrate_sets_with_quality_bands():
    rng = np.random.default_rng(2)
    ps, emb, q = _identity_set(rng, 60, 4, 0.5)
    table = calibrate_sets([("s", ps, emb, q)], quality_split=0.5, fmrs=(1e-2, 1e-3))
    low, high = table["quality_bands"]
    assert (low["min_quality"], low["max_quality"], high["min_quality"], high["max_quality"]) == (0.0, 0.5, 0.5, None)
    n = table["impostor_pairs"]
    assert low["ordered_impostor_pairs"] + high["ordered_impostor_pairs"] == 2 * n   # each direction once
    ops = OperatingPoints.from_dict(table, "t.json")
    assert ops.threshold_for(1e-3, None)[0] == table["points"][1]["threshold"]
    assert ops.threshold_for(1e-3, 0.2)[0] == low["points"][1]["threshold"]
    assert ops.threshold_for(1e-3, 0.7)[0] == high["points"][1]["threshold"]
    point = threshold(ops, 1e-3, 0.2)
    assert point.table == "t.json#quality<0.5" and threshold(ops, 1e-3).table == "t.json"
    assert threshold(ops, 1e-3, 0.9).table == "t.json#quality>=0.5"


def test_a_population_table_is_found_and_a_missing_one_is_an_error(tmp_path):
    pack = SimpleNamespace(path=tmp_path, manifest={"pack": "no-such-pack"}, has=lambda name: False)
    (tmp_path / "calibration-local.json").write_text(json.dumps(
        {"points": [{"fmr": 1e-4, "threshold": 0.5}], "population": "local"}))
    ops = OperatingPoints.for_pack(pack, population="local")
    assert ops.threshold_for(1e-4) == (0.5, 1e-4) and ops.source.endswith("calibration-local.json")
    assert "local" in populations(pack)
    assert OperatingPoints.for_pack(pack) is None                    # no unnamed table there
    with pytest.raises(FacegateError) as err:
        OperatingPoints.for_pack(pack, population="elsewhere")
    assert err.value.code == "model_unavailable" and "--population elsewhere" in err.value.message


def test_one_fold_lfw_file_is_cross_validated_over_ten_folds(tmp_path):
    """The defect: a pairs.txt with the header ``1<TAB>300`` gave 75 % (no fold to choose a
    threshold on). Now its listed pairs are cross-validated over 10 folds, and the report says so."""
    rng = np.random.default_rng(3)
    lines, emb = ["1\t20"], {}
    vec = lambda: (lambda v: (v / np.linalg.norm(v)).astype(np.float32))(rng.normal(size=16))
    for i in range(20):                          # genuine: two photos of one person, nearly the same vector
        v = vec()
        emb[f"P{i}/P{i}_0001.jpg"] = v
        w = v + rng.normal(scale=0.05, size=16).astype(np.float32)
        emb[f"P{i}/P{i}_0002.jpg"] = w / np.linalg.norm(w)
        lines.append(f"P{i}\t1\t2")
    for i in range(20):                          # impostor: two different people
        emb[f"Q{i}/Q{i}_0001.jpg"], emb[f"R{i}/R{i}_0001.jpg"] = vec(), vec()
        lines.append(f"Q{i}\t1\tR{i}\t1")
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    pairset = read_lfw_pairs(path)
    assert pairset.folds == 1
    engine = SimpleNamespace(operating_points=OperatingPoints([{"fmr": 1e-4, "threshold": 0.5}], "t"),
                             settings=SimpleNamespace(target_fmr=1e-4))
    result = evaluate(engine, pairset, emb)
    assert result["folds"] == 1 and result["cv_folds"] == 10 and "10 folds" in result["cv_note"]
    assert result["accuracy"] == 1.0                  # 0.75 before the fix
