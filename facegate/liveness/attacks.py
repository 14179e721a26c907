"""Presentation attacks synthesised from real captures, for tests and benchmarks.

- ``still_photo``: one frame repeated; optionally with hand-held jitter (a smooth random walk
  of shift, rotation, scale), sensor noise + JPEG re-encoding, and tilting (the photo turned
  about its vertical axis, i.e. a perspective warp, as a fraudster does to fake a head turn).
- ``splice``: the first part of one person's capture followed by another person's.
"""
from __future__ import annotations

import cv2
import numpy as np

from facegate.liveness.capture import Capture


def still_photo(frame: np.ndarray, seconds: float = 3.0, fps: float = 30.0, jitter: bool = False,
                noise: bool = False, tilt_degrees: float = 0.0, seed: int = 0) -> Capture:
    rng = np.random.default_rng(seed)
    h, w = frame.shape[:2]
    n = int(round(seconds * fps))
    cap = Capture(max_frames=max(n, 1), max_seconds=seconds + 1)
    shift = np.zeros(2); angle = 0.0; scale = 1.0
    for i in range(n):
        img = frame
        if jitter:
            shift = 0.9 * shift + rng.normal(0, 1.5, 2)
            angle = 0.9 * angle + rng.normal(0, 0.4)
            scale = 1 + 0.9 * (scale - 1) + rng.normal(0, 0.004)
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
            m[:, 2] += shift
            img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        if tilt_degrees:
            # planar photo rotating about its vertical axis: 0 -> tilt -> 0 over the capture
            a = np.radians(tilt_degrees) * np.sin(np.pi * i / max(n - 1, 1))
            img = _tilt(img, a)
        if noise:
            img = np.clip(img.astype(np.float32) + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
            img = cv2.imdecode(enc, cv2.IMREAD_COLOR)
        cap.add(i / fps, img)
    return cap


def _tilt(img: np.ndarray, angle: float, focal: float = 2.0) -> np.ndarray:
    """Perspective view of the image plane rotated by ``angle`` about its vertical centre line."""
    h, w = img.shape[:2]
    f = focal * w
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = []
    for x, y in src:
        X = (x - w / 2) * np.cos(angle)
        Z = (x - w / 2) * np.sin(angle)
        s = f / (f + Z)
        dst.append([w / 2 + X * s, h / 2 + (y - h / 2) * s])
    m = cv2.getPerspectiveTransform(src, np.float32(dst))
    return cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def splice(a: Capture, b: Capture, switch_at: float) -> Capture:
    """Frames of ``a`` before ``switch_at`` seconds, then ``b``'s frames from that time on
    (``b`` resized to ``a``'s frame size), on one continuous clock."""
    h, w = a.frames[0].bgr.shape[:2]
    out = Capture(max_frames=len(a.frames) + len(b.frames), max_seconds=a.duration + b.duration + 1)
    for f in a.frames:
        if f.t < switch_at:
            out.add(f.t, f.bgr)
    for f in b.frames:
        if f.t >= switch_at:
            img = f.bgr if f.bgr.shape[:2] == (h, w) else cv2.resize(f.bgr, (w, h), interpolation=cv2.INTER_AREA)
            out.add(f.t, img)
    return out


def segment(capture: Capture, start: float, end: float) -> Capture:
    """The frames in [start, end) seconds, re-timed to start at 0."""
    out = Capture(max_frames=capture.max_frames, max_seconds=capture.max_seconds)
    for f in capture.frames:
        if start <= f.t < end:
            out.add(f.t - start, f.bgr)
    return out


def as_page_sends(capture: Capture, fps: float = 20.0, side: int = 640, quality: int = 85,
                  start: float = 0.0, end: float = float("inf")) -> Capture:
    """``capture``'s frames in [start, end) as the capture page sends them: about ``fps`` of
    them, long side at most ``side`` px, JPEG at ``quality``, kept as the service keeps them
    (JPEG bytes, decoded when looked at), re-timed to start at 0."""
    from facegate.liveness.capture import reduce_frame
    out = Capture(max_frames=capture.max_frames, max_seconds=capture.max_seconds)
    due = None
    for f in capture.frames:
        if not start <= f.t < end or (due is not None and f.t + 1e-6 < due):
            continue
        due = (f.t if due is None else due) + 1.0 / fps
        ok, data = cv2.imencode(".jpg", reduce_frame(f.bgr, side), [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.add_stored(f.t - start, data.tobytes())
    return out
