"""Face crops shared by the liveness models: a box scaled about its centre, cut with zero
padding where it leaves the image, resized to the network's input."""
from __future__ import annotations

import cv2
import numpy as np


def square_box(box, scale: float = 1.0) -> np.ndarray:
    """The square (x1, y1, x2, y2) of side ``max(w, h) * scale`` centred on ``box``."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = max(x2 - x1, y2 - y1) * scale
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def crop_padded(img: np.ndarray, box, size: tuple[int, int]) -> np.ndarray:
    """``img[y1:y2, x1:x2]`` with zero padding outside the image, resized to ``size`` (w, h)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    h, w = img.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if cx1 >= cx2 or cy1 >= cy2:
        return np.zeros((size[1], size[0]) + img.shape[2:], dtype=img.dtype)
    patch = img[cy1:cy2, cx1:cx2]
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        pad = [(cy1 - y1, y2 - cy2), (cx1 - x1, x2 - cx2)] + [(0, 0)] * (img.ndim - 2)
        patch = np.pad(patch, pad)
    interp = cv2.INTER_AREA if patch.shape[1] > size[0] else cv2.INTER_LINEAR
    return cv2.resize(patch, size, interpolation=interp)


def shifted_inside_crop(img: np.ndarray, box, scale: float, size: tuple[int, int]) -> np.ndarray:
    """Silent-Face's training crop: the box (w, h) scaled by ``min(scale, (H-1)/h, (W-1)/w)``
    about its centre, shifted back inside the image (not shrunk), resized bilinearly."""
    H, W = img.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    bw, bh = x2 - x1, y2 - y1
    s = min((H - 1) / bh, (W - 1) / bw, scale)
    nw, nh = bw * s, bh * s
    cx, cy = x1 + bw / 2, y1 + bh / 2
    lx, ly = cx - nw / 2, cy - nh / 2
    rx, ry = cx + nw / 2, cy + nh / 2
    if lx < 0:
        rx, lx = rx - lx, 0
    if ly < 0:
        ry, ly = ry - ly, 0
    if rx > W - 1:
        lx, rx = lx - (rx - W + 1), W - 1
    if ry > H - 1:
        ly, ry = ly - (ry - H + 1), H - 1
    patch = img[int(ly):int(ry) + 1, int(lx):int(rx) + 1]
    return cv2.resize(patch, size, interpolation=cv2.INTER_LINEAR)
