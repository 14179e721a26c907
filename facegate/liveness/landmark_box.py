"""The face box the liveness models are cut from, made from the face's own 68 points.

The 68-point, eye and pose models crop around a face box, and the action rules were tuned on
full MTCNN's boxes. A detector with other boxes (the fast path's run 1-2.5 % of the face width
taller) shifts every crop. Between detections the tracker has no detector box at all. So the
box is derived from the points: for the centroid ``c`` and RMS radius ``s`` of the 68 points,

    (cx - c_x) / s, (cy - c_y) / s, log(w / s), log(h / s)

are linear in an intercept and 14 key points relative to ``(c, s)``, fitted (ridge) onto full
MTCNN's boxes on the development clips by ``python -m benchmarks.liveness_tracking fit``, which
writes ``landmark_box.json`` beside this module with the command and the held-out error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

BOX_FILE = "landmark_box.json"
KEY_POINTS = (36, 39, 42, 45, 30, 48, 54, 8, 0, 16, 27, 33, 57, 51)


def features(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(features, centroid, RMS radius) of one face's 68 points."""
    pts = np.asarray(pts, dtype=np.float64)
    c = pts.mean(axis=0)
    s = float(np.sqrt(((pts - c) ** 2).sum(axis=1).mean())) + 1e-9
    return np.concatenate([[1.0], ((pts[list(KEY_POINTS)] - c) / s).ravel()]), c, s


def targets(box: np.ndarray, c: np.ndarray, s: float) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return np.array([(cx - c[0]) / s, (cy - c[1]) / s, np.log((box[2] - box[0]) / s), np.log((box[3] - box[1]) / s)])


@dataclass(frozen=True)
class LandmarkBox:
    coef: np.ndarray          # (1 + 2 * len(KEY_POINTS), 4)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """x1, y1, x2, y2 of the box full MTCNN would give for the face with these 68 points."""
        f, c, s = features(pts)
        dx, dy, lw, lh = f @ self.coef
        cx, cy, w, h = c[0] + dx * s, c[1] + dy * s, np.exp(lw) * s, np.exp(lh) * s
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])

    @classmethod
    def fit(cls, points: list[np.ndarray], boxes: list[np.ndarray], ridge: float = 1e-2) -> "LandmarkBox":
        rows = [features(p) for p in points]
        x = np.stack([r[0] for r in rows])
        y = np.stack([targets(b, c, s) for b, (_, c, s) in zip(boxes, rows)])
        reg = ridge * np.eye(x.shape[1])
        reg[0, 0] = 0.0
        return cls(np.linalg.solve(x.T @ x + reg, x.T @ y))

    def as_dict(self) -> dict:
        return {"key_points": list(KEY_POINTS), "coef": [[round(float(v), 10) for v in row] for row in self.coef]}

    @classmethod
    def from_dict(cls, d: dict) -> "LandmarkBox":
        if tuple(d["key_points"]) != KEY_POINTS:
            raise ValueError("landmark_box.json was fitted on other key points")
        return cls(np.asarray(d["coef"], dtype=np.float64))

    @classmethod
    def shipped(cls) -> "LandmarkBox":
        return cls.from_dict(json.loads((resources.files("facegate.liveness") / BOX_FILE).read_text()))
