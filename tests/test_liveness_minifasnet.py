"""MiniFASNet graphs rebuilt from the weight arrays in ../shared match the reference logits, and
both passive PAD families classify the three Silent-Face samples correctly."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import need_shared
from facegate.liveness.minifasnet import MINIFASNET_MODELS, build_minifasnet_pack, reference_error
from facegate.liveness.pad import FrLivenessPAD, MiniFASNetPAD
from facegate.models.pack import load_pack, sha256_file
from facegate.models.onnx import create_session


@pytest.fixture(scope="module")
def minifasnet_pack(tmp_path_factory):
    weights = need_shared("models", "minifasnet")
    model_dir = tmp_path_factory.mktemp("models")
    path = build_minifasnet_pack(weights, model_dir, reference_dir=weights)
    return path, weights


def test_rebuilt_graphs_match_reference_logits(minifasnet_pack):
    path, weights = minifasnet_pack
    manifest = json.loads((path / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == [s.name for s in MINIFASNET_MODELS]
    for spec, entry in zip(MINIFASNET_MODELS, manifest["models"]):
        onnx_path = path / entry["file"]
        assert sha256_file(onnx_path) == entry["sha256"]
        ref = weights / spec.weights_file.replace(".weights.", ".reference.")
        assert reference_error(onnx_path, ref) < 1e-4, spec.name


def test_unpinned_weights_are_refused(minifasnet_pack, tmp_path):
    _, weights = minifasnet_pack
    for spec in MINIFASNET_MODELS:
        shutil.copy(weights / spec.weights_file, tmp_path / spec.weights_file)
    arrays = dict(np.load(tmp_path / MINIFASNET_MODELS[0].weights_file))
    arrays["prob.weight"] = arrays["prob.weight"] * 1.01
    np.savez(tmp_path / MINIFASNET_MODELS[0].weights_file, **arrays)
    with pytest.raises(ValueError, match="refusing unknown weights"):
        build_minifasnet_pack(tmp_path, tmp_path / "models")
    assert not (tmp_path / "models" / "minifasnet").exists()


def test_silent_face_samples(minifasnet_pack, engine):
    path, _ = minifasnet_pack
    samples = need_shared("data", "spoof-smoke", "silentface-samples")
    pack = load_pack(path.parent, path.name)
    families = [
        FrLivenessPAD(create_session(engine.pack.verified_path("fr_liveness"))),
        MiniFASNetPAD([(create_session(pack.verified_path(m["name"])), m["crop_scale"])
                       for m in pack.manifest["models"]]),
    ]
    for pad in families:
        scores = {}
        for name in ("image_T1.jpg", "image_F1.jpg", "image_F2.jpg"):
            img = cv2.imread(str(samples / name))
            box = engine.face(img).box
            scores[name] = pad.score(img, box)
        assert scores["image_T1.jpg"] >= 0.5, (pad.name, scores)
        assert scores["image_F1.jpg"] < 0.5 and scores["image_F2.jpg"] < 0.5, (pad.name, scores)


def test_cli_build_pad_and_loading(tmp_path, monkeypatch, engine, capsys):
    from facegate.cli import main
    from facegate.config import Settings
    from facegate.errors import FacegateError
    from facegate.liveness.pad import load_pad_models

    weights = need_shared("models", "minifasnet")
    monkeypatch.setenv("FACEGATE_MODEL_DIR", str(tmp_path / "models"))
    assert main(["liveness", "build-pad", "--weights", str(weights)]) == 0
    assert "reference max |diff|" in capsys.readouterr().out
    models = load_pad_models(Settings.load(liveness_pad="minifasnet"), engine.pack)
    assert [m.name for m in models] == ["minifasnet"] and len(models[0].nets) == 2
    assert [m.name for m in load_pad_models(Settings.load(liveness_pad="auto"), engine.pack)] == ["fr_liveness", "minifasnet"]
    assert load_pad_models(Settings.load(liveness_pad="none"), engine.pack) == []
    with pytest.raises(FacegateError, match="model_unavailable"):
        load_pad_models(Settings.load(liveness_pad="minifasnet", model_dir=str(tmp_path / "empty")), engine.pack)
