"""Face alignment: a similarity transform (rotation, uniform scale, translation) from the five
detected landmarks onto the standard ArcFace 112x112 template.

A similarity keeps the face's proportions; a full affine fitted to three points shears faces and
cost the embedder about ten points of LFW accuracy.
"""
from __future__ import annotations

import cv2
import numpy as np

ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama, 1991).

    Returns the 2x3 matrix M with dst ~= M @ [x, y, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s0 ** 2).sum() / n
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_face(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp the face to a ``size`` x ``size`` crop in the ArcFace template's frame."""
    template = ARCFACE_TEMPLATE * (size / 112.0)
    m = similarity_transform(landmarks, template)
    return cv2.warpAffine(bgr, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
