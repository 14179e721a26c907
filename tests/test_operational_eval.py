"""``facegate eval --operational``: pairs decided as POST /v1/verify decides them, and the plots."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from facegate.engine import FaceEngine
from facegate.evaluation.operational import Sample, acquire_images, decide_pairs
from facegate.evaluation.pairs import Pair, PairSet, read_pairs, write_pairs_csv
from facegate.evaluation.plots import error_rates, plot_data, read_png_data, write_plot
from facegate.matching.operating_points import OperatingPoints

CONTRACT = ("pairs", "acquired_pairs", "fta_rate", "false_matches", "false_non_matches", "manual_reviews",
            "fmr", "fnmr", "review_rate", "gfar", "gfrr", "threshold")


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def _at(cos: float) -> np.ndarray:
    """A unit vector whose cosine with e0 is ``cos``."""
    return _unit([cos, np.sqrt(max(0.0, 1 - cos * cos)), 0, 0])


def test_the_arithmetic_on_a_known_set():
    e0 = _unit([1, 0, 0, 0])
    samples = {
        ("ref", "enrol"): Sample(e0, 0.9),
        ("same_high", "probe"): Sample(_at(0.80), 0.9),     # genuine, match
        ("same_band", "probe"): Sample(_at(0.47), 0.9),     # genuine, in the review band -> manual_review
        ("same_low", "probe"): Sample(_at(0.30), 0.9),      # genuine, no_match (a false non-match)
        ("same_lowq", "probe"): Sample(_at(0.90), 0.25),    # genuine, low quality -> manual_review
        ("other_high", "probe"): Sample(_at(0.60), 0.9),    # impostor over the threshold: a false match
        ("other_low", "probe"): Sample(_at(0.10), 0.9),     # impostor, no_match
        ("gone", "probe"): Sample(None, None, "low_quality"),  # failure to acquire
        ("gone2", "probe"): Sample(None, None, "no_face"),
    }
    pairs = [Pair("ref", n, n.startswith("same") or n == "gone", 0) for n, _ in samples if n != "ref"]
    engine = SimpleNamespace(settings=SimpleNamespace(target_fmr=1e-4, review_band=0.05, review_min_quality=0.35),
                             operating_points=OperatingPoints([{"fmr": 1e-4, "threshold": 0.5}], "test.json"))
    r = decide_pairs(engine, PairSet(pairs, 1, None), samples)
    assert r["pairs"] == 8 and r["acquired_pairs"] == 6 and r["fta_rate"] == pytest.approx(2 / 8)
    assert (r["genuine_pairs"], r["impostor_pairs"]) == (5, 3)
    assert r["false_matches"] == 1 and r["false_non_matches"] == 1 and r["manual_reviews"] == 2
    assert r["fmr"] == pytest.approx(1 / 2)                  # among the 2 acquired impostor pairs
    assert r["fnmr"] == pytest.approx(1 / 4)                 # among the 4 acquired genuine pairs
    assert r["review_rate"] == pytest.approx(2 / 6)
    assert r["gfar"] == pytest.approx(1 / 3)                 # the unacquired impostor pair cannot match
    assert r["gfrr"] == pytest.approx((1 + 1) / 5)           # 1 genuine not acquired + 1 false non-match
    assert r["threshold"] == 0.5 and r["review_reasons"] == {"low_quality": 1, "score_near_threshold": 1}
    assert r["acquisition_failures"] == {"probe:low_quality": 1, "probe:no_face": 1}
    assert set(CONTRACT) <= set(r)


def test_a_quality_band_table_is_applied_to_the_probe():
    e0 = _unit([1, 0, 0, 0])
    samples = {("ref", "enrol"): Sample(e0, 0.9), ("dark", "probe"): Sample(_at(0.60), 0.4),
               ("bright", "probe"): Sample(_at(0.60), 0.9)}
    pairs = [Pair("ref", "dark", False, 0), Pair("ref", "bright", False, 0)]
    table = {"points": [{"fmr": 1e-4, "threshold": 0.55}],
             "quality_bands": [{"min_quality": 0.0, "max_quality": 0.5, "points": [{"fmr": 1e-4, "threshold": 0.7}]},
                               {"min_quality": 0.5, "max_quality": None, "points": [{"fmr": 1e-4, "threshold": 0.5}]}]}
    engine = SimpleNamespace(settings=SimpleNamespace(target_fmr=1e-4, review_band=0.0, review_min_quality=0.35),
                             operating_points=OperatingPoints.from_dict(table, "t.json"))
    r = decide_pairs(engine, PairSet(pairs, 1, None), samples)
    assert r["false_matches"] == 1                           # only the well-exposed probe reaches its threshold
    assert r["threshold"] == 0.55                            # the table's all-probes point is reported


@pytest.fixture(scope="module")
def small_set(lfw_images, tmp_path_factory):
    """Real photos with known outcomes: a genuine pair, an impostor pair, a blurred probe (refused
    as low quality), a blank probe (no face) and a two-face probe (multiple faces)."""
    d = tmp_path_factory.mktemp("opset")
    src = {"a1": "Aaron_Sorkin/Aaron_Sorkin_0001.jpg", "a2": "Aaron_Sorkin/Aaron_Sorkin_0002.jpg",
           "c1": "AJ_Cook/AJ_Cook_0001.jpg"}
    img = {k: cv2.imread(str(lfw_images / v)) for k, v in src.items()}
    for k, v in img.items():
        cv2.imwrite(str(d / f"{k}.jpg"), v)
    cv2.imwrite(str(d / "blur.jpg"), cv2.GaussianBlur(img["a2"], (0, 0), 5))
    cv2.imwrite(str(d / "blank.jpg"), np.full((250, 250, 3), 120, np.uint8))
    cv2.imwrite(str(d / "two.jpg"), np.hstack([img["a2"], img["c1"]]))
    ids = {"a1.jpg": "A", "a2.jpg": "A", "blur.jpg": "A", "blank.jpg": "A", "two.jpg": "A", "c1.jpg": "C"}
    pairs = [("a1.jpg", "a2.jpg"), ("a1.jpg", "c1.jpg"), ("a1.jpg", "blur.jpg"), ("a1.jpg", "blank.jpg"),
             ("a1.jpg", "two.jpg")]
    return write_pairs_csv(d / "pairs.csv", pairs, ids), d


def test_real_photos_through_the_service_gates(engine, small_set):
    path, images = small_set
    pairset = read_pairs(path)
    samples = acquire_images(engine, images, pairset)
    assert samples[("blur.jpg", "probe")].error == "low_quality"
    assert samples[("blank.jpg", "probe")].error == "no_face"
    assert samples[("two.jpg", "probe")].error == "multiple_faces"
    r = decide_pairs(engine, pairset, samples)
    assert r["pairs"] == 5 and r["acquired_pairs"] == 2 and r["fta_rate"] == pytest.approx(0.6)
    assert r["false_matches"] == 0 and r["false_non_matches"] == 0
    assert r["genuine_matches"] + r["genuine_reviews"] == 1 and r["true_non_matches"] == 1
    assert r["gfrr"] == pytest.approx(3 / 4)                 # 3 of the 4 genuine pairs were not acquired


def test_cli_contract(small_set, tmp_path):
    path, images = small_set
    plot = tmp_path / "op.png"
    proc = subprocess.run([sys.executable, "-m", "facegate", "eval", "--operational", "--pairs", str(path),
                           "--images", str(images), "--json", "--plot", str(plot)],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert set(CONTRACT) <= set(out)
    assert out["pairs"] == 5 and out["acquired_pairs"] == 2 and out["fta_rate"] == pytest.approx(0.6)
    assert read_png_data(plot)["genuine"] == 1 and read_png_data(plot)["impostor"] == 1


# ---------------------------------------------------------------- plots
def test_plot_data_and_png(tmp_path):
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.7, 0.1, 2_000), rng.normal(0.05, 0.1, 200_000)
    points = [{"fmr": 1e-2, "threshold": 0.25}, {"fmr": 1e-3, "threshold": 0.31}, {"fmr": 1e-4, "threshold": 0.37}]
    data = plot_data(genuine, impostor, points, {"threshold": 0.37, "fmr": 1e-4}, "synthetic")
    det = data["det"]
    t = np.array(det["threshold"])
    assert np.all(np.diff(t) > 0)
    assert np.all(np.diff(det["fmr"]) <= 0) and np.all(np.diff(det["fnmr"]) >= 0)   # a DET curve: a trade-off
    assert det["fmr"][0] == 1.0 and det["fnmr"][-1] == 1.0 and det["fmr"][-1] == 0.0
    for p in data["points"]:
        fmr, fnmr = error_rates(genuine, impostor, [p["threshold"]])
        assert (p["fmr"], p["fnmr"]) == (pytest.approx(fmr[0]), pytest.approx(fnmr[0]))
    assert [p["active"] for p in data["points"]] == [False, False, True]
    assert sum(data["histogram"]["genuine"]) == 2_000 and sum(data["histogram"]["impostor"]) == 200_000
    pytest.importorskip("matplotlib")
    png = write_plot(tmp_path / "det.png", data)
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    assert (width, height) == (800, 336)
    back = read_png_data(png)                        # the numbers behind the picture travel with it
    assert back["points"] == data["points"] and back["active"] == data["active"]
    assert back["histogram"] == data["histogram"] and len(back["det"]["fmr"]) <= 60
    assert png.stat().st_size < 200_000


# ---------------------------------------------------------------- captures
@pytest.fixture(scope="module")
def nuaa_captures(tmp_path_factory):
    from conftest import need_shared
    from benchmarks.nuaa_verification import write_captures

    root = need_shared("data", "nuaa", "live")
    out = tmp_path_factory.mktemp("captures")
    write_captures(root, out)
    return out


def test_nuaa_sessions_decided_as_captures(engine, nuaa_captures):
    """Subject 0004's over-exposed session (13 of its 15 frames were refused by the quality score
    before its exposure aspect was re-fitted) is acquired as a capture, matches 0004's other
    sessions and no other person."""
    from facegate.evaluation.captures import acquire_captures, capture_frames, decide_captures

    full = read_pairs(nuaa_captures / "nuaa-capture-pairs.csv")
    mine = {"0004_01_00_01", "0004_01_00_02", "0004_01_06_03", "0001_00_00_01", "0001_00_00_02"}
    pairset = PairSet([p for p in full.pairs if p.a in mine and p.b in mine], 1, full.identities)
    frames = capture_frames(nuaa_captures / "0004_01_06_03")
    assert len(frames) == 15 and frames[0].name.endswith("_24.jpg")         # numeric frame order
    samples, infos = acquire_captures(engine, nuaa_captures, pairset)
    r = decide_captures(engine, pairset, samples, infos)
    assert r["pairs"] == 20 and r["genuine_pairs"] == 8 and r["fta_rate"] == 0
    assert r["false_matches"] == 0 and r["false_non_matches"] == 0 and r["true_non_matches"] == 12
    assert infos[("0004_01_06_03", "probe")]["used_frames"] > 1               # a fused template
    assert r["captures"]["probe"]["captures"] == 5 and r["captures"]["probe"]["acquired"] == 5


def test_cli_captures_needs_operational(nuaa_captures):
    proc = subprocess.run([sys.executable, "-m", "facegate", "eval", "--captures", "--pairs",
                           str(nuaa_captures / "nuaa-capture-pairs.csv"), "--images", str(nuaa_captures)],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert proc.returncode != 0 and "--captures needs --operational" in proc.stdout + proc.stderr
