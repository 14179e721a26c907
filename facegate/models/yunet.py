"""YuNet face proposals (OpenCV zoo ``face_detection_yunet_2023mar.onnx``, MIT) on onnxruntime.

The published graph has a fixed 1x3x640x640 input, but nothing in it depends on that size (its
Reshapes are [1, -1, c] and its two Resizes are x2 nearest): the pack build renames the input's
height and width to symbolic dimensions (:func:`dynamic_model`), so any size that is a multiple
of 32 runs. An image is scaled down when its longer side exceeds ``max_side`` and zero-padded at
the bottom and right to multiples of 32 (padding moves no coordinate).

Input: raw BGR 0..255 as float32 NCHW (no mean, no scale). Outputs per stride s in 8/16/32,
row-major over the (H/s) x (W/s) grid: cls, obj (sigmoids), bbox (4), kps (10). Decoding is
OpenCV's ``FaceDetectorYN`` (4.8+)::

    score = sqrt(clip(cls) * clip(obj))
    centre = ((col, row) + bbox[0:2]) * s,  size = exp(bbox[2:4]) * s
    point k = ((col, row) + kps[2k:2k+2]) * s

then a score threshold and greedy NMS (IoU 0.3). It agrees with ``cv2.FaceDetectorYN`` on the same
graph to 1e-2 px (``tests/test_fast_detector.py``). The five points come out in image order
(image-left eye first), as MTCNN's do. The fast path (:mod:`facegate.models.fast_path`) uses
YuNet for the boxes only; the landmarks come from MTCNN's O-Net.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

STRIDES = (8, 16, 32)


def dynamic_model(model) -> None:
    """Make an ``onnx`` model's input height/width (and the outputs' anchor counts) symbolic, in place."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for i, name in ((2, "height"), (3, "width")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = name
    for out in model.graph.output:
        d = out.type.tensor_type.shape.dim[1]
        d.ClearField("dim_value")
        d.dim_param = f"{out.name}_n"
    del model.graph.value_info[:]      # stale fixed shapes: onnxruntime re-infers them


@lru_cache(maxsize=32)
def _grid(h: int, w: int, stride: int) -> np.ndarray:
    rows, cols = h // stride, w // stride
    yy, xx = np.mgrid[0:rows, 0:cols]
    return np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)   # (col, row)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, top_k: int = 0) -> np.ndarray:
    """Greedy NMS on x1,y1,x2,y2 boxes (OpenCV's ``NMSBoxes``, as ``FaceDetectorYN`` uses)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou, top_k=top_k)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


class YuNet:
    """Face boxes, scores and five points: ``raw(bgr)`` -> (boxes N x 4, scores N, points N x 5 x 2),
    best score first, in the image's pixels. ``preprocess`` / ``infer`` / ``decode`` are the
    stages (timed separately by the fast path)."""

    def __init__(self, session, score_threshold: float = 0.5, nms_threshold: float = 0.3,
                 max_side: int = 640, top_k: int = 50):
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.outputs = [f"{k}_{s}" for s in STRIDES for k in ("cls", "obj", "bbox", "kps")]
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.top_k = top_k

    def preprocess(self, bgr: np.ndarray, max_side: int | None = None) -> tuple[np.ndarray, float]:
        """NCHW float32 blob padded to multiples of 32, and the scale applied to the image (its
        longer side brought to ``max_side``, default ``self.max_side``, when longer)."""
        h, w = bgr.shape[:2]
        scale = min(1.0, (max_side or self.max_side) / max(h, w))
        if scale < 1.0:
            bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
            h, w = bgr.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = (np.zeros if (ph, pw) != (h, w) else np.empty)((1, 3, ph, pw), dtype=np.float32)
        for c, plane in enumerate(cv2.split(bgr)):   # 0.2 ms at VGA; cv2.dnn.blobFromImage took 3.4 ms
            blob[0, c, :h, :w] = plane
        return blob, scale

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {self.input_name: blob})

    def decode(self, outs: list[np.ndarray], blob_hw: tuple[int, int], scale: float):
        h, w = blob_hw
        boxes, scores, kps = [], [], []
        for i, s in enumerate(STRIDES):
            cls, obj, bbox, kp = (o[0] for o in outs[4 * i:4 * i + 4])
            score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
            sel = np.nonzero(score >= self.score_threshold)[0]
            if sel.size == 0:
                continue
            g = _grid(h, w, s)[sel]
            b = bbox[sel]
            c = (g + b[:, :2]) * s
            wh = np.exp(b[:, 2:]) * s
            boxes.append(np.concatenate([c - wh / 2, c + wh / 2], axis=1))
            scores.append(score[sel])
            kps.append((g[:, None, :] + kp[sel].reshape(-1, 5, 2)) * s)
        if not boxes:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        boxes, scores, kps = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
        keep = nms(boxes, scores, self.nms_threshold, self.top_k)
        boxes, scores, kps = (boxes[keep].astype(np.float64), scores[keep].astype(np.float64),
                              kps[keep].astype(np.float64))
        if scale != 1.0:
            boxes /= scale
            kps /= scale
        return boxes, scores, kps

    def raw(self, bgr: np.ndarray, max_side: int | None = None):
        blob, scale = self.preprocess(bgr, max_side)
        return self.decode(self.infer(blob), blob.shape[2:], scale)
