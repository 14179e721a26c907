"""68-point face landmarks (``fr_landmark``): 64x64 greyscale crop of the square face box, /256;
the network returns the points as fractions of that crop."""
from __future__ import annotations

import cv2
import numpy as np

from facegate.liveness.crops import crop_padded, square_box

# iBUG 68-point indices (image left/right as seen by the camera)
EYE_A = slice(36, 42)
EYE_B = slice(42, 48)
INNER_LIPS = slice(60, 68)


class Landmarker68:
    def __init__(self, session):
        self.session = session
        self.input = session.get_inputs()[0].name

    def __call__(self, grey: np.ndarray, box) -> np.ndarray:
        """68 x 2 points in image pixels for the face in ``box`` of the greyscale image."""
        sq = square_box(box)
        crop = crop_padded(grey, sq, (64, 64)).astype(np.float32) / 256.0
        pts = self.session.run(None, {self.input: crop[None, None]})[0].reshape(68, 2)
        return pts * (sq[2] - sq[0]) + sq[:2]


def eye_aspect_ratio(pts: np.ndarray) -> float:
    """Mean of both eyes' (|p2-p6| + |p3-p5|) / (2 |p1-p4|) (Soukupova & Cech, 2016)."""
    def one(e):
        return (np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / (2 * np.linalg.norm(e[0] - e[3]) + 1e-6)
    return float((one(pts[EYE_A]) + one(pts[EYE_B])) / 2)


def mouth_aspect_ratio(pts: np.ndarray) -> float:
    """Inner-lip opening over mouth width: (|61-67| + |62-66| + |63-65|) / (3 |60-64|)."""
    m = pts[INNER_LIPS]
    gap = np.linalg.norm(m[1] - m[7]) + np.linalg.norm(m[2] - m[6]) + np.linalg.norm(m[3] - m[5])
    return float(gap / (3 * np.linalg.norm(m[0] - m[4]) + 1e-6))


def grey_of(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
