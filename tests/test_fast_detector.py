"""The default pack's fast detection path (YuNet box -> calibrated square box -> MTCNN's O-Net)."""
import json
import shutil

import cv2
import numpy as np
import pytest

from facegate.config import Settings
from facegate.engine import FaceEngine
from facegate.models import fast_path
from facegate.models.mtcnn import MTCNNDetector
from conftest import need_shared

# Agreement with full MTCNN's five points, per face: mean point distance as a fraction of the
# inter-eye distance. Measured on all of lfw-dev: mean 2.8 %, 95th percentile 5.5 %
# (benchmarks/results/fast_detector.md); NUAA frames 2.9 % / 5.4 %.
MAX_ERR_IED = 0.10          # any single face
MAX_MEAN_ERR_IED = 0.045    # the mean over the photos below


@pytest.fixture(scope="module")
def fast(engine):
    if not isinstance(engine.detector, fast_path.FastPathDetector):
        pytest.fail("the default pack's detector should be the fast path; rebuild: facegate models build")
    return engine.detector


@pytest.fixture(scope="module")
def mtcnn_engine(engine, fast):
    return FaceEngine(engine.pack, fast.fallback, engine.embedder, engine.settings, engine.operating_points)


@pytest.fixture(scope="module")
def photos(lfw_images):
    people = sorted(p for p in lfw_images.iterdir() if p.is_dir())[::60][:25]
    imgs = [(cv2.imread(str(sorted(p.glob("*.jpg"))[0])), 20) for p in people]
    nuaa = need_shared("data", "nuaa", "live")
    imgs += [(cv2.imread(str(sorted(d.glob("*.jpg"))[0])), 24) for d in sorted(nuaa.iterdir())[:8]]
    return imgs


def _central(dets, shape):
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(dets, key=lambda d: np.hypot((d.box[0] + d.box[2]) / 2 - cx, (d.box[1] + d.box[3]) / 2 - cy))


def test_landmarks_agree_with_full_mtcnn_on_real_photos(engine, mtcnn_engine, fast, photos):
    errs = []
    for img, min_face in photos:
        a = _central(mtcnn_engine.detect(img, min_face), img.shape)
        b = _central(engine.detect(img, min_face), img.shape)
        assert not fast.last_used_fallback                  # YuNet found these faces itself
        ied = np.linalg.norm(a.landmarks[1] - a.landmarks[0])
        err = np.linalg.norm(a.landmarks - b.landmarks, axis=1).mean() / ied
        assert err < MAX_ERR_IED, err
        errs.append(err)
        # the box keeps MTCNN's convention (the face-size rules keep their meaning)
        assert abs((b.box[2] - b.box[0]) - (a.box[2] - a.box[0])) < 0.25 * (a.box[2] - a.box[0])
    assert np.mean(errs) < MAX_MEAN_ERR_IED, np.mean(errs)


def test_yunet_decoding_matches_opencv(engine, fast, photos):
    """The onnxruntime decoding is OpenCV's FaceDetectorYN on the same graph."""
    path = str(engine.pack.model_path("yunet"))
    for img, _ in photos[:6] + photos[-3:]:
        h, w = img.shape[:2]
        scale = min(1.0, fast.proposer.max_side / max(h, w))
        small = img if scale == 1 else cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        ref = cv2.FaceDetectorYN.create(path, "", (small.shape[1], small.shape[0]), fast.proposer.score_threshold,
                                        fast.proposer.nms_threshold, fast.proposer.top_k).detect(small)[1]
        boxes, scores, kps = fast.proposer.raw(img)
        assert ref is not None and len(ref) == len(boxes)
        ref = ref[np.argsort(-ref[:, 14])]
        np.testing.assert_allclose(boxes[:, :2] * scale, ref[:, :2], atol=2e-2)
        np.testing.assert_allclose(kps.reshape(-1, 10) * scale, ref[:, 4:14], atol=2e-2)


def test_full_mtcnn_runs_when_yunet_finds_nothing(engine, fast):
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert fast.detect(blank, 24) == [] and fast.last_used_fallback


def test_proposals_below_the_minimum_face_go_to_the_fallback(fast, photos):
    img, _ = photos[0]
    assert fast.detect(img, 20) and not fast.last_used_fallback
    fast.detect(img, 1000)                   # no proposal is that large: MTCNN decides (and finds none)
    assert fast.last_used_fallback


def test_shipped_calibration_says_how_it_was_made():
    cal = fast_path.shipped_calibration()
    assert cal["made_with"].startswith("python -m benchmarks.fast_detector")
    assert np.asarray(cal["coef"]).shape == (12, 3) and cal["use_kps"] is True
    box = fast_path.BoxCalibration.from_dict(cal).apply(np.array([[10.0, 20, 110, 140]]),
                                                        np.array([[[40, 60], [80, 60], [60, 85], [45, 110], [75, 110]]], float))
    assert box[0, 2] - box[0, 0] == pytest.approx(box[0, 3] - box[0, 1])      # square


def test_a_pack_without_yunet_keeps_plain_mtcnn(settings, engine, tmp_path):
    copy = tmp_path / "old-pack"
    shutil.copytree(engine.pack.path, copy, ignore=shutil.ignore_patterns("sface.onnx"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"] = [m for m in manifest["models"] if m["name"] not in ("yunet", "sface")]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    old = FaceEngine.load(Settings.load(pack=str(copy)))
    assert type(old.detector) is MTCNNDetector
