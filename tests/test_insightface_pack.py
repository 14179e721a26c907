"""The insightface routing path, with small ONNX files generated here in the signatures of an
SCRFD detector and an ArcFace recogniser. insightface's real packs (buffalo_l, antelopev2) are not
obtainable on these machines, so this checks routing, preprocessing and the engine's use of
them, not their accuracy."""
import json
import logging

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("insightface")

from facegate.cli import main as cli_main  # noqa: E402
from facegate.config import Settings  # noqa: E402
from facegate.engine import FaceEngine  # noqa: E402
from facegate.errors import FacegateError  # noqa: E402
from facegate.matching.decisions import threshold  # noqa: E402
from facegate.models.alignment import align_face  # noqa: E402

ANCHOR = (5, 10)            # stride-32 cell (row, col): centre (320, 160)
KPS = np.array([[-0.9, -0.6], [0.9, -0.6], [0.0, 0.2], [-0.7, 1.1], [0.7, 1.1]], np.float32)


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_recogniser(path, seed=0):
    w = np.random.default_rng(seed).normal(0, 1, (588, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["fc1"]),
    ]
    graph = helper.make_graph(nodes, "arcface_like",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 112, 112])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 512])],
                              [numpy_helper.from_array(w, "w")])
    _save(graph, path)
    return w


def make_detector(path):
    """SCRFD signature (9 outputs: scores, boxes, keypoints at strides 8/16/32, 2 anchors),
    answering one fixed face whatever the input."""
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    outputs = []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            n = (640 // stride) ** 2 * 2
            arr = np.zeros((n, width), np.float32)
            if stride == 32:
                idx = (ANCHOR[0] * 20 + ANCHOR[1]) * 2
                arr[idx] = {"score": [0.95], "bbox": [2, 2, 2, 2], "kps": KPS.ravel()}[kind]
            name = f"{kind}_{stride}"
            inits.append(numpy_helper.from_array(arr, f"{name}_c"))
            nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, width]))
    graph = helper.make_graph(nodes, "scrfd_like",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])],
                              outputs, inits)
    _save(graph, path)


@pytest.fixture()
def pack_folder(tmp_path):
    folder = tmp_path / "buffalo_l"
    folder.mkdir()
    make_detector(folder / "det_10g.onnx")
    weights = make_recogniser(folder / "w600k_r50.onnx")
    assert cli_main(["models", "add", str(folder)]) == 0
    return folder, weights


def test_models_add_routes_by_signature(pack_folder):
    folder, _ = pack_folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "insightface" and manifest["embedding_dim"] == 512
    by_task = {m["task"]: m for m in manifest["models"]}
    assert by_task["detection"]["class"] == "SCRFD"
    assert by_task["recognition"]["class"] == "ArcFaceONNX"
    assert "non-commercial" in by_task["recognition"]["source"]["licence"]


def test_engine_runs_the_pack_and_warns_about_the_licence(pack_folder, caplog, settings):
    folder, weights = pack_folder
    with caplog.at_level(logging.WARNING):
        engine = FaceEngine.load(Settings.load(model_dir=settings.model_dir, pack=str(folder)))
    assert "NON-COMMERCIAL" in caplog.text
    assert engine.pack_id.startswith("buffalo_l-")
    img = np.random.default_rng(1).integers(0, 255, (640, 640, 3), dtype=np.uint8)
    faces = engine.faces(img, policy="all")
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, [256, 96, 384, 224], atol=1)
    centre = np.array([320, 160], np.float32)
    np.testing.assert_allclose(faces[0].landmarks, centre + KPS * 32, atol=1)
    # the embedding is the generated recogniser applied with insightface's preprocessing
    crop = align_face(img, faces[0].landmarks)
    blob = (crop[:, :, ::-1].astype(np.float32) - 127.5) / 127.5
    pooled = cv2.resize(blob, (14, 14), interpolation=cv2.INTER_AREA).transpose(2, 0, 1).reshape(-1)
    expected = pooled @ weights
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(faces[0].embedding, expected, atol=1e-4)


def test_uncalibrated_pack_refuses_decisions_and_tampering_is_refused(pack_folder, settings):
    folder, _ = pack_folder
    engine = FaceEngine.load(Settings.load(model_dir=settings.model_dir, pack=str(folder)))
    with pytest.raises(FacegateError) as err:
        threshold(engine.operating_points, 1e-4)
    assert err.value.code == "model_unavailable" and "calibrate" in err.value.message
    with open(folder / "w600k_r50.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(FacegateError) as err:
        FaceEngine.load(Settings.load(model_dir=settings.model_dir, pack=str(folder)))
    assert err.value.code == "model_checksum_mismatch"
