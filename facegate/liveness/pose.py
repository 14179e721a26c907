"""Head pose (``fr_pose``, Hopenet-style): 224x224 **RGB** crop of the face box enlarged 1.5x,
ImageNet mean/std; three heads of 66 bins (3 degrees each, from -99) for yaw, pitch and roll."""
from __future__ import annotations

import cv2
import numpy as np

from facegate.liveness.crops import crop_padded, square_box

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_BINS = np.arange(66, dtype=np.float64) * 3 - 99


class HeadPoseEstimator:
    def __init__(self, session):
        self.session = session
        self.input = session.get_inputs()[0].name

    def __call__(self, bgr: np.ndarray, box) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees."""
        crop = crop_padded(bgr, square_box(box, 1.5), (224, 224))
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        x = ((rgb - _MEAN) / _STD).transpose(2, 0, 1)[None]
        heads = self.session.run(None, {self.input: np.ascontiguousarray(x)})
        angles = []
        for logits in heads[:3]:
            v = logits[0].astype(np.float64)
            p = np.exp(v - v.max())
            angles.append(float((p / p.sum()) @ _BINS))
        return angles[0], angles[1], angles[2]
