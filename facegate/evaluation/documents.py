"""ID-document portraits: what a kiosk reads from an identity card's chip.

The chip holds a small JPEG portrait (about 102x126 px). :func:`chip_photo` turns an ordinary
photo into one like it, for measuring and calibrating person-vs-document matching
(``benchmarks/kiosk_chip.py``), since real chip photos cannot be used for evaluation.
"""
from __future__ import annotations

import cv2
import numpy as np

CHIP_SIZE = (102, 126)          # width, height
CHIP_JPEG_QUALITY = 60


def chip_photo(bgr: np.ndarray, box: np.ndarray | None = None, size: tuple[int, int] = CHIP_SIZE,
               quality: int = CHIP_JPEG_QUALITY) -> bytes:
    """A chip-like JPEG portrait of the face in ``bgr``.

    The crop is a portrait window around the face (``box`` x1,y1,x2,y2, or the image centre)
    with head and shoulders room like a passport photo, downscaled to ``size`` and JPEG-encoded.
    """
    h, w = bgr.shape[:2]
    if box is None:
        cx, cy, face = w / 2, h / 2, min(w, h) * 0.45
    else:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        face = max(box[2] - box[0], box[3] - box[1])
    ch = face * 1.8                               # head, hair and a little shoulder, as on an ID card
    cw = ch * size[0] / size[1]
    x0, y0 = int(round(cx - cw / 2)), int(round(cy - ch / 2 - 0.06 * ch))
    x1, y1 = x0 + int(round(cw)), y0 + int(round(ch))
    padded = cv2.copyMakeBorder(bgr, max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w),
                                cv2.BORDER_REPLICATE)
    ox, oy = max(0, -x0), max(0, -y0)
    crop = padded[y0 + oy:y1 + oy, x0 + ox:x1 + ox]
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return buf.tobytes()
