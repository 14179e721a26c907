"""The default pack's detector: YuNet's boxes, MTCNN's O-Net landmarks, full MTCNN as the fallback.

MTCNN spends most of its time in P-Net's image pyramid (about 9 of 22 ms on a 250x250 photo, 30
of 50 ms on a 640x480 frame, 1 thread). Here YuNet (:mod:`facegate.models.yunet`, one network
pass on the image scaled to a longer side of at most 640) proposes the faces instead, and each
proposal goes through MTCNN's own last stage (YuNet first looks at the image with its longer
side at 320 px, and again at 640 only when that finds no face or only small ones):

    YuNet box + points --calibration--> the square box MTCNN would have fed O-Net
                       --O-Net--> five landmarks, box regression, face probability

so the aligner and the embedder keep seeing MTCNN's landmarks (1.2 px from full MTCNN's on
average on lfw-dev, 2.8 % of the inter-eye distance) and templates enrolled with MTCNN stay valid.
As in MTCNN, a face is kept only when O-Net's face probability is at least 0.7, and only when at
least 80 % of its box lies inside the image. When YuNet proposes no face of at least
``0.8 * min_face`` px, or the largest proposal is not kept, full MTCNN runs on the image and
decides.

Box calibration (:class:`BoxCalibration`): for a YuNet box of centre (cx, cy) and size (w, h),
``dx = (cx' - cx) / w``, ``dy = (cy' - cy) / h`` and ``ds = log(side' / sqrt(w h))`` are linear in
an intercept, ``log(h / w)`` and YuNet's five points relative to the box (36 coefficients), where
(cx', cy', side') is the square box MTCNN fed O-Net for the same face. The coefficients were
fitted (ridge least squares) on 1,500 seeded lfw-dev photos by ``benchmarks/fast_detector.py fit``
and ship as ``fast_path_calibration.json`` beside this module, with the command that made them.

Measured (benchmarks/results/fast_detector.md): see that file for the speed, coverage, TAR,
accuracy and mixed-pair figures against full MTCNN.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from facegate.models.base import Detection
from facegate.models.mtcnn import WINDOW, MTCNNDetector, _crops, _regress, _square
from facegate.models.runtime import open_model
from facegate.models.pack import ModelPack
from facegate.models.yunet import YuNet

CALIBRATION_FILE = "fast_path_calibration.json"
# YuNet's score threshold. At OpenCV's default 0.9 it found 6,844 of lfw-dev's 6,922 faces; at 0.5
# (and down to 0.8) all of them.
YUNET_SCORE = 0.5
# YuNet looks at the image with its longer side at most YUNET_COARSE_SIDE first (a 640x480 frame:
# 2 ms instead of 6.4). YuNet finds faces of YUNET_RELIABLE_PX and more in its input (all of 200
# faces 48 px wide in a 640x480 frame looked at in 320x240; 124 of 200 at 24 px). When the
# requested minimum face is smaller than that at the coarse scale, YuNet looks again at
# YUNET_MAX_SIDE if the coarse pass found no face or only faces under FINE_PASS_BELOW x min_face:
# such a face could have a second face of the minimum size beside it that the coarse pass cannot
# see and that counts under policy "single" (second faces >= 0.4 x the largest).
YUNET_COARSE_SIDE = 320
YUNET_MAX_SIDE = 640
YUNET_RELIABLE_PX = 24
FINE_PASS_BELOW = 2.5
# Proposals smaller than this fraction of the requested minimum face are dropped (YuNet's box is
# tighter than MTCNN's).
MIN_FACE_SLACK = 0.8
# O-Net's face probability a refined proposal needs: MTCNN's own third-stage threshold. Without it
# YuNet's partial faces at photo edges made policy "single" refuse 620 of lfw-dev's 3,811 pair
# photos as multiple_faces (full MTCNN: 433; with the gate: 453).
ONET_GATE = 0.7
# A refined face with less than this fraction of its box inside the image is a face cut by the
# border (a bystander at a photo's edge): not kept. MTCNN's P-Net rarely finds those, and
# counting them made policy "single" refuse photos MTCNN accepts (lfw-dev's pair photos refused as
# multiple_faces: fast path without this rule 453, with it 404, full MTCNN 433).
MIN_INSIDE = 0.8


@dataclass
class BoxCalibration:
    coef: np.ndarray                    # (n_features, 3): dx, dy, ds
    use_kps: bool = True

    @staticmethod
    def features(boxes: np.ndarray, kps: np.ndarray | None, use_kps: bool) -> np.ndarray:
        w = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
        h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
        f = [np.ones(len(boxes)), np.log(h / w)]
        if use_kps:
            cx = (boxes[:, 0] + boxes[:, 2]) / 2
            cy = (boxes[:, 1] + boxes[:, 3]) / 2
            f += list(((kps[:, :, 0] - cx[:, None]) / w[:, None]).T)
            f += list(((kps[:, :, 1] - cy[:, None]) / h[:, None]).T)
        return np.stack(f, axis=1)

    @classmethod
    def fit(cls, boxes: np.ndarray, kps: np.ndarray | None, targets: np.ndarray, use_kps: bool = True,
            ridge: float = 1e-3) -> "BoxCalibration":
        """Least squares (ridge, intercept unpenalised) from proposal boxes onto target square boxes."""
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        tw = targets[:, 2] - targets[:, 0]
        th = targets[:, 3] - targets[:, 1]
        tcx = (targets[:, 0] + targets[:, 2]) / 2
        tcy = (targets[:, 1] + targets[:, 3]) / 2
        y = np.stack([(tcx - cx) / w, (tcy - cy) / h, np.log(np.sqrt(tw * th) / np.sqrt(w * h))], axis=1)
        x = cls.features(boxes, kps, use_kps)
        reg = ridge * np.eye(x.shape[1])
        reg[0, 0] = 0.0
        return cls(np.linalg.solve(x.T @ x + reg, x.T @ y), use_kps)

    def apply(self, boxes: np.ndarray, kps: np.ndarray | None) -> np.ndarray:
        """Square boxes x1, y1, x2, y2 (float)."""
        d = self.features(boxes, kps, self.use_kps) @ self.coef
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 + d[:, 0] * w
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 + d[:, 1] * h
        side = np.sqrt(w * h) * np.exp(d[:, 2])
        return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)

    def as_dict(self) -> dict:
        return {"coef": [[round(float(v), 10) for v in row] for row in self.coef], "use_kps": self.use_kps}

    @classmethod
    def from_dict(cls, d: dict) -> "BoxCalibration":
        return cls(np.asarray(d["coef"], dtype=np.float64), bool(d["use_kps"]))


def shipped_calibration() -> dict:
    """The calibration file shipped with facegate (coefficients, how they were made, held-out error)."""
    return json.loads((resources.files("facegate.models") / CALIBRATION_FILE).read_text())


class OnetRefiner:
    """MTCNN's O-Net on given square boxes, with MTCNN's own crop (integer box, zero padding,
    INTER_AREA, (p - 127.5) / 128, transposed), cut from the BGR image and flipped to RGB per crop."""

    def __init__(self, onet):
        self.onet = onet
        self._oin = onet.get_inputs()[0].name

    def __call__(self, bgr: np.ndarray, boxes: np.ndarray):
        """(regressed boxes N x 4, landmarks N x 5 x 2, face probability N), as MTCNN's stage 3."""
        b = np.fix(boxes)
        crops = np.ascontiguousarray(_crops(bgr, b, 48)[..., ::-1])
        reg, pts, prob = self.onet.run(None, {self._oin: crops})
        w = b[:, 2] - b[:, 0] + 1
        h = b[:, 3] - b[:, 1] + 1
        xs = pts[:, 0:5] * w[:, None] + b[:, 0:1] - 1
        ys = pts[:, 5:10] * h[:, None] + b[:, 1:2] - 1
        return _regress(b, reg), np.stack([xs, ys], axis=2), prob[:, 1]


def _inside(boxes: np.ndarray, shape) -> np.ndarray:
    """Fraction of each box's area inside the image."""
    h, w = shape[:2]
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    iw = (np.minimum(boxes[:, 2], w) - np.maximum(boxes[:, 0], 0)).clip(0)
    ih = (np.minimum(boxes[:, 3], h) - np.maximum(boxes[:, 1], 0)).clip(0)
    return iw * ih / area


@dataclass
class FastPathDetector:
    """``detect(bgr, min_face)`` like :class:`~facegate.models.mtcnn.MTCNNDetector.detect`.

    Returned boxes are O-Net's regressed boxes (MTCNN's box convention, so the face-size rules
    keep their meaning); the score is O-Net's face probability, as MTCNN's final score is.
    ``last_times`` holds the seconds of the last call's stages (pre, yunet, yunet_nms, onet, mtcnn);
    ``last_fine_pass`` says whether YuNet looked a second time at full resolution,
    ``last_used_fallback`` whether full MTCNN decided.
    """
    proposer: YuNet
    refiner: OnetRefiner
    calibration: BoxCalibration
    fallback: MTCNNDetector
    smallest_face: int = WINDOW
    onet_gate: float = ONET_GATE
    coarse_side: int | None = YUNET_COARSE_SIDE     # None: one pass at the proposer's max_side
    last_times: dict = field(default_factory=dict)
    last_used_fallback: bool = False
    last_fine_pass: bool = False

    def _propose(self, bgr: np.ndarray, max_side: int, min_face: int, times: dict):
        """YuNet's boxes and points of faces of at least ``MIN_FACE_SLACK * min_face`` px."""
        clock = time.perf_counter
        t0 = clock()
        blob, scale = self.proposer.preprocess(bgr, max_side)
        t1 = clock()
        outs = self.proposer.infer(blob)
        t2 = clock()
        boxes, _, kps = self.proposer.decode(outs, blob.shape[2:], scale)
        if len(boxes):
            ok = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= MIN_FACE_SLACK * min_face
            boxes, kps = boxes[ok], kps[ok]
        times["pre"] += t1 - t0
        times["yunet"] += t2 - t1
        times["yunet_nms"] += clock() - t2
        return boxes, kps

    def detect(self, bgr: np.ndarray, min_face: int = 20) -> list[Detection]:
        clock = time.perf_counter
        times = {"pre": 0.0, "yunet": 0.0, "yunet_nms": 0.0, "onet": 0.0, "mtcnn": 0.0}
        long_side = max(bgr.shape[:2])
        coarse = min(self.coarse_side or self.proposer.max_side, self.proposer.max_side)
        boxes, kps = self._propose(bgr, coarse, min_face, times)
        small_faces_unseen = long_side > coarse and min_face * coarse / long_side < YUNET_RELIABLE_PX
        if small_faces_unseen and (len(boxes) == 0 or np.max(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
                                   < FINE_PASS_BELOW * min_face):
            boxes, kps = self._propose(bgr, self.proposer.max_side, min_face, times)
            self.last_fine_pass = True
        else:
            self.last_fine_pass = False
        t3 = clock()
        if len(boxes) == 0:
            dets = self.fallback.detect(bgr, min_face=min_face)
            times["mtcnn"] = clock() - t3
            self.last_times, self.last_used_fallback = times, True
            return dets
        square = self.calibration.apply(boxes, kps)
        out_boxes, landmarks, prob = self.refiner(bgr, square)
        times["onet"] = clock() - t3
        keep = (prob >= self.onet_gate) & (_inside(out_boxes, bgr.shape) >= MIN_INSIDE)
        if not keep[int(np.argmax(square[:, 2] - square[:, 0]))]:
            # the largest proposal (the face a single-face photo is about) is doubted: MTCNN decides
            t4 = clock()
            dets = self.fallback.detect(bgr, min_face=min_face)
            times["mtcnn"] = clock() - t4
            self.last_times, self.last_used_fallback = times, True
            return dets
        out_boxes, landmarks, prob = out_boxes[keep], landmarks[keep], prob[keep]
        self.last_times, self.last_used_fallback = times, False
        dets = [Detection(box=b.astype(np.float32), score=float(p), landmarks=l.astype(np.float32))
                for b, l, p in zip(out_boxes, landmarks, prob)]
        dets.sort(key=lambda d: -d.score)
        return dets


def load(pack: ModelPack, settings, mtcnn: MTCNNDetector) -> FastPathDetector:
    """The fast path on ``pack``'s YuNet and ``mtcnn``'s O-Net (checksums verified), with the
    shipped box calibration."""
    session = open_model(pack.verified_path("yunet"), settings)
    calibration = BoxCalibration.from_dict(shipped_calibration())
    return FastPathDetector(YuNet(session, score_threshold=YUNET_SCORE, max_side=YUNET_MAX_SIDE),
                            OnetRefiner(mtcnn.onet), calibration, mtcnn)
