"""The command-line contract outside checks rely on."""
import json
import os
import subprocess
import sys

import pytest

from conftest import need_shared


def facegate(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "facegate", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)
    if check and proc.returncode not in (0,):
        raise AssertionError(f"facegate {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_models_list_json():
    packs = json.loads(facegate("models", "list", "--json").stdout)
    default = next(p for p in packs if p["pack"] == "default")
    assert default["checksums_ok"] is True
    assert {m["name"] for m in default["models"]} >= {"mtcnn_onet", "fr_feature"}


def test_embed_json_one_line_per_image_with_error_codes(lfw_images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    good = lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg"
    proc = facegate("embed", "--json", str(good), str(bad), str(tmp_path / "missing.jpg"), check=False)
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert len(lines) == 3 and proc.returncode == 2
    assert len(lines[0]["embedding"]) == 512 and lines[0]["path"] == str(good)
    assert lines[1]["error"]["code"] == "unsupported_image"
    assert lines[2]["error"]["code"] == "not_found"


def test_compare_json(lfw_images):
    a = lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg"
    b = lfw_images / "Aaron_Sorkin" / "Aaron_Sorkin_0002.jpg"
    c = lfw_images / "AJ_Cook" / "AJ_Cook_0001.jpg"
    same = json.loads(facegate("compare", str(a), str(b), "--json").stdout)
    diff = json.loads(facegate("compare", str(a), str(c), "--json").stdout)
    assert set(same) >= {"score", "match", "threshold", "fmr"}
    assert same["match"] is True and diff["match"] is False
    assert same["score"] > same["threshold"] > diff["score"]


def test_compare_error_is_json_with_code(tmp_path, lfw_images):
    blank = tmp_path / "blank.png"
    import cv2, numpy as np
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    proc = facegate("compare", str(blank), str(lfw_images / "AJ_Cook" / "AJ_Cook_0001.jpg"), "--json", check=False)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["code"] == "no_face"


def test_eval_json_on_deepface_pairs():
    folder = need_shared("data", "deepface-pairs")
    out = json.loads(facegate("eval", "--pairs", str(folder / "master.csv"), "--images", str(folder), "--json").stdout)
    for key in ("accuracy", "accuracy_std", "auc", "tar_at_far", "accuracy_at_default_threshold",
                "errors_at_default_threshold", "false_matches_at_default_threshold",
                "false_non_matches_at_default_threshold", "failures"):
        assert key in out, key
    assert set(out["tar_at_far"]) == {"0.001", "0.0001"}
    assert out["pairs"] == 300 and out["failures"] == 0
    assert out["errors_at_default_threshold"] <= 1 and out["accuracy"] >= 0.99


def test_eval_counts_missing_photos_as_failures(tmp_path):
    folder = need_shared("data", "deepface-pairs")
    lines = (folder / "master.csv").read_text().splitlines()
    csv = tmp_path / "pairs.csv"
    yes = [l for l in lines[1:] if l.endswith("Yes")][:10]
    no = [l for l in lines[1:] if l.endswith("No")][:10]
    csv.write_text("\n".join([lines[0]] + yes + no + ["nope.jpg,img1.jpg,Yes"]) + "\n")
    out = json.loads(facegate("eval", "--pairs", str(csv), "--images", str(folder), "--json").stdout)
    assert out["pairs"] == 21 and out["failures"] == 1 and out["failed_pairs"] == 1
    assert out["errors_at_default_threshold"] >= 1


def test_calibrate_writes_a_table(tmp_path):
    folder = need_shared("data", "deepface-pairs")
    out = tmp_path / "cal.json"
    table = json.loads(facegate("calibrate", "--pairs", str(folder / "master.csv"), "--images", str(folder),
                                "--out", str(out), "--json").stdout)
    assert json.loads(out.read_text())["points"] == table["points"]
    assert [p["fmr"] for p in table["points"]] == [0.01, 0.001, 0.0001, 1e-05]
    assert table["impostor_pairs"] == 262                       # deepface's csv names no identities


def test_calibrate_several_sets_for_a_population(tmp_path):
    """Two labelled sets: per target the stricter threshold, each set's rates recorded; the
    population names the table, and --quality-split adds a table per probe-quality band."""
    folder = need_shared("data", "deepface-pairs")
    lines = (folder / "master.csv").read_text().splitlines()
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("\n".join([lines[0]] + lines[1:151]) + "\n")
    second.write_text("\n".join([lines[0]] + lines[151:]) + "\n")
    out = tmp_path / "cal-test.json"
    table = json.loads(facegate("calibrate", "--pairs", str(first), "--images", str(folder), "--pairs", str(second),
                                "--images", str(folder), "--population", "test", "--quality-split", "0.5",
                                "--out", str(out), "--json").stdout)
    assert table["population"] == "test" and "--population test" in table["made_with"]
    assert [s["name"] for s in table["sets"]] == ["a.csv", "b.csv"]
    for p in table["points"]:
        assert p["threshold"] == max(v["own_threshold"] for v in p["by_set"].values())
        assert all(v["measured_fmr"] <= p["fmr"] or not v["reliable"] for v in p["by_set"].values())
    assert [(b["min_quality"], b["max_quality"]) for b in table["quality_bands"]] == [(0.0, 0.5), (0.5, None)]
    for band in table["quality_bands"]:      # a band no probe falls in answers with the all-probes points
        assert band["ordered_impostor_pairs"] > 0 or band["points"] == table["points"]
    assert json.loads(out.read_text())["points"] == table["points"]


def test_eval_plot_writes_a_png_with_its_data(tmp_path):
    pytest.importorskip("matplotlib")
    folder = need_shared("data", "deepface-pairs")
    png = tmp_path / "det.png"
    out = json.loads(facegate("eval", "--pairs", str(folder / "master.csv"), "--images", str(folder), "--json",
                              "--plot", str(png)).stdout)
    from facegate.evaluation.plots import read_png_data
    data = read_png_data(png)
    assert data["genuine"] == out["plot"]["genuine"] > 0 and data["impostor"] == out["plot"]["impostor"] > 0
    assert [p["target_fmr"] for p in data["points"]] == [0.01, 0.001, 0.0001, 1e-05]
    assert data["active"]["threshold"] == out["default_threshold"]
