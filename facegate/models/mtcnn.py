"""MTCNN face detector (P-, R- and O-Net ONNX graphs): boxes, scores and 5 landmarks.

The graphs are Keras conversions of the original Caffe MTCNN, which was trained on transposed
images: every crop is fed as (N, W, H, 3) RGB, scaled to (p - 127.5) / 128.
"""
from __future__ import annotations

import cv2
import numpy as np

from facegate.models.base import Detection
from facegate.models.runtime import open_model
from facegate.models.pack import ModelPack

# P-Net's window: no face smaller than this is found, and no image smaller than it holds one.
WINDOW = 12


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crop integer boxes (1-based inclusive, as MTCNN defines them) with zero padding, resize,
    normalise and transpose to the (N, W, H, 3) layout the graphs expect."""
    h, w = rgb.shape[:2]
    out = np.empty((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        patch = np.zeros((max(bh, 1), max(bw, 1), 3), dtype=np.uint8)
        sx0, sy0 = max(x1 - 1, 0), max(y1 - 1, 0)
        sx1, sy1 = min(x2, w), min(y2, h)
        if sx1 > sx0 and sy1 > sy0:
            dx0, dy0 = sx0 - (x1 - 1), sy0 - (y1 - 1)
            patch[dy0:dy0 + sy1 - sy0, dx0:dx0 + sx1 - sx0] = rgb[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    out = (out - 127.5) * 0.0078125
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3))


class MTCNNDetector:
    """Three-stage cascade. ``detect(bgr)`` returns detections sorted by score."""

    smallest_face = WINDOW

    def __init__(self, pnet, rnet, onet, thresholds=(0.6, 0.7, 0.7), scale_factor: float = 0.709):
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.thresholds = thresholds
        self.scale_factor = scale_factor
        self._pin = pnet.get_inputs()[0].name
        self._rin = rnet.get_inputs()[0].name
        self._oin = onet.get_inputs()[0].name

    def _scales(self, h: int, w: int, min_face: int) -> list[float]:
        m = WINDOW / min_face
        min_layer = min(h, w) * m
        scales = []
        k = 0
        while min_layer >= WINDOW:
            scales.append(m * self.scale_factor ** k)
            min_layer *= self.scale_factor
            k += 1
        return scales

    def _stage1(self, rgb: np.ndarray, min_face: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        found = []
        for scale in self._scales(h, w, min_face):
            sw, sh = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            img = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
            img = ((img - 127.5) * 0.0078125)[None].transpose(0, 2, 1, 3)
            reg, prob = self.pnet.run(None, {self._pin: np.ascontiguousarray(img)})
            # outputs are (1, W', H', c): index as [col, row]
            prob = prob[0, :, :, 1]
            reg = reg[0]
            cols, rows = np.where(prob >= self.thresholds[0])
            if cols.size == 0:
                continue
            boxes = np.stack([
                np.fix((2 * cols + 1) / scale), np.fix((2 * rows + 1) / scale),
                np.fix((2 * cols + WINDOW) / scale), np.fix((2 * rows + WINDOW) / scale),
                prob[cols, rows],
                reg[cols, rows, 0], reg[cols, rows, 1], reg[cols, rows, 2], reg[cols, rows, 3],
            ], axis=1)
            boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.5)]
            found.append(boxes)
        if not found:
            return np.empty((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[_nms(boxes[:, :4], boxes[:, 4], 0.7)]
        bw = boxes[:, 2] - boxes[:, 0]
        bh = boxes[:, 3] - boxes[:, 1]
        out = np.stack([boxes[:, 0] + boxes[:, 5] * bw, boxes[:, 1] + boxes[:, 6] * bh,
                        boxes[:, 2] + boxes[:, 7] * bw, boxes[:, 3] + boxes[:, 8] * bh,
                        boxes[:, 4]], axis=1)
        out = _square(out)
        out[:, :4] = np.fix(out[:, :4])
        return out

    def _stage2(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if len(boxes) == 0:
            return boxes
        reg, prob = self.rnet.run(None, {self._rin: _crops(rgb, boxes, 24)})
        score = prob[:, 1]
        keep = score > self.thresholds[1]
        boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
        reg = reg[keep]
        if len(boxes) == 0:
            return boxes
        pick = _nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _regress(boxes[pick], reg[pick])
        return _square(boxes)

    def _stage3(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(boxes) == 0:
            return boxes, np.empty((0, 5, 2))
        boxes = np.fix(boxes)
        reg, pts, prob = self.onet.run(None, {self._oin: _crops(rgb, boxes, 48)})
        score = prob[:, 1]
        keep = score > self.thresholds[2]
        boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
        reg, pts = reg[keep], pts[keep]
        if len(boxes) == 0:
            return boxes, np.empty((0, 5, 2))
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        xs = pts[:, 0:5] * w[:, None] + boxes[:, 0:1] - 1
        ys = pts[:, 5:10] * h[:, None] + boxes[:, 1:2] - 1
        landmarks = np.stack([xs, ys], axis=2)
        boxes = _regress(boxes, reg)
        pick = _nms(boxes[:, :4], boxes[:, 4], 0.7, "min")
        return boxes[pick], landmarks[pick]

    def detect(self, bgr: np.ndarray, min_face: int = 20) -> list[Detection]:
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        boxes = self._stage1(rgb, max(int(min_face), WINDOW))
        boxes = self._stage2(rgb, boxes)
        boxes, landmarks = self._stage3(rgb, boxes)
        dets = [Detection(box=b[:4].astype(np.float32), score=float(b[4]),
                          landmarks=l.astype(np.float32)) for b, l in zip(boxes, landmarks)]
        dets.sort(key=lambda d: -d.score)
        return dets


def load(pack: ModelPack, settings) -> MTCNNDetector:
    """The detector on ``pack``'s three MTCNN graphs (checksums verified)."""
    def session(name):
        return open_model(pack.verified_path(name), settings)
    return MTCNNDetector(session("mtcnn_pnet"), session("mtcnn_rnet"), session("mtcnn_onet"))
