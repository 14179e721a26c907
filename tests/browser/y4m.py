"""Clips of ``../shared/data/face-videos`` as YUV4MPEG2 (.y4m) files for Chromium's fake camera
(``--use-file-for-fake-video-capture``), written at test time into a temporary folder (never
committed).

Chromium plays the file at its declared frame rate and starts again at its end. A clip is
written as its segment ``[start, end]`` played forwards, then backwards (without repeating the
turning frames), so the loop has no jump: the face moves on continuously however long the page
keeps the camera open. A still photo is one frame repeated.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def _frames(clip: Path, start: float, end: float, fps: float, max_side: int):
    """I420 planes of ``clip`` between ``start`` and ``end`` seconds, resampled to ``fps``."""
    out = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        next_t = start
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else frame.time
            if t < next_t - 1e-6:
                continue
            if t > end + 1e-6:
                break
            w, h = frame.width, frame.height
            scale = min(1.0, max_side / max(w, h))
            w2, h2 = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
            out.append(frame.reformat(width=w2, height=h2, format="yuv420p").to_ndarray())
            next_t += 1.0 / fps
    if not out:
        raise ValueError(f"no frames of {clip} within {start}-{end} s")
    return out


def _write(path: Path, planes: list[np.ndarray], fps: int) -> Path:
    h2, w = planes[0].shape            # yuv420p as one array: h * 3/2 rows
    h = h2 * 2 // 3
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for p in planes:
            f.write(b"FRAME\n")
            f.write(np.ascontiguousarray(p).tobytes())
    return path


def clip_y4m(clip: Path, out: Path, start: float, end: float, fps: int = 25, max_side: int = 640,
             palindrome: bool = True) -> Path:
    """The segment ``[start, end]`` of ``clip`` as a y4m at ``fps`` (forwards, then backwards)."""
    planes = _frames(clip, start, end, fps, max_side)
    if palindrome and len(planes) > 2:
        planes = planes + planes[-2:0:-1]
    return _write(out, planes, fps)


def still_y4m(clip: Path, out: Path, at: float, seconds: float = 4.0, fps: int = 25, max_side: int = 640) -> Path:
    """One frame of ``clip`` (at ``at`` seconds) repeated for ``seconds``: a photo held up."""
    frame = _frames(clip, at, at + 0.2, fps, max_side)[0]
    return _write(out, [frame] * int(seconds * fps), fps)
