"""A liveness capture: timestamped frames from JPEG uploads (possibly several requests) or one
short video, and the checks on the capture itself.

Capture checks (each failure is a machine-readable reason):
- ``timestamps_not_monotonic``: frame times must strictly increase, across uploads too.
- ``frame_rate_too_low``: blinks last ~0.1-0.3 s, so frames must come at >= 8 per second.
- ``repeated_frames``: many neighbouring frames with pixel-identical face regions (a still
  image sent again and again).
- ``no_natural_motion``: the face's 68 points never move beyond what a flat picture moved,
  rotated, scaled, tilted or noised can do (see :func:`planar_residual`).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import cv2
import numpy as np

from facegate.errors import FacegateError
from facegate.images import decode_image
from facegate.liveness.crops import crop_padded, square_box

MIN_FPS = 8.0
REPEATED_PIXEL_DIFF = 0.02         # mean |difference| of 64x64 grey face crops: identical
REPEATED_MAX_FRACTION = 0.3
# Landmark movement a homography cannot explain (see planar_residual) below which a capture
# shows no natural motion.
MIN_NONPLANAR_CHANGE = 0.015


@dataclass
class CaptureFrame:
    t: float
    bgr: np.ndarray


@dataclass
class Capture:
    """Frames collected for one session, in arrival order, with limits."""
    max_frames: int = 450
    max_seconds: float = 20.0
    frames: list[CaptureFrame] = field(default_factory=list)
    non_monotonic: bool = False
    thumbs: list[np.ndarray] = field(default_factory=list, repr=False)

    def add(self, t: float, bgr: np.ndarray) -> None:
        if len(self.frames) >= self.max_frames:
            raise FacegateError("invalid_request", f"a capture holds at most {self.max_frames} frames",
                                max_frames=self.max_frames)
        t = float(t)
        if not np.isfinite(t):
            raise FacegateError("invalid_request", "frame timestamps must be finite numbers (seconds)")
        if self.frames and t <= self.frames[-1].t:
            self.non_monotonic = True
        if self.frames and t - self.frames[0].t > self.max_seconds:
            raise FacegateError("invalid_request", f"a capture lasts at most {self.max_seconds:g} s",
                                max_seconds=self.max_seconds)
        self.frames.append(CaptureFrame(t, bgr))

    def add_jpegs(self, items: list[tuple[float, bytes]], max_bytes: int, max_pixels: int) -> int:
        for t, data in items:
            self.add(t, decode_image(data, max_bytes, max_pixels))
        return len(items)

    def add_video(self, data: bytes, max_pixels: int) -> int:
        before = len(self.frames)
        offset = self.frames[-1].t + 1e-3 if self.frames else 0.0
        for t, bgr in decode_video(data, max_pixels, self.max_frames - before, self.max_seconds):
            self.add(offset + t, bgr)
        return len(self.frames) - before

    @property
    def duration(self) -> float:
        return self.frames[-1].t - self.frames[0].t if len(self.frames) > 1 else 0.0


def decode_video(data: bytes, max_pixels: int, max_frames: int, max_seconds: float):
    """(seconds, BGR frame) pairs from an mp4/webm/mov byte string, decoded with PyAV."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as exc:  # PyAV raises several error types for undecodable input
        raise FacegateError("unsupported_image", f"the video could not be opened: {type(exc).__name__}") from None
    try:
        if not container.streams.video:
            raise FacegateError("unsupported_image", "the upload has no video stream")
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if w * h > max_pixels:
            raise FacegateError("image_too_large", f"video frames are {w}x{h}", limit_pixels=max_pixels)
        count, t0 = 0, None
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else count / float(stream.average_rate or 30)
                t0 = t if t0 is None else t0
                if t - t0 > max_seconds:
                    raise FacegateError("invalid_request", f"a capture lasts at most {max_seconds:g} s",
                                        max_seconds=max_seconds)
                if count >= max_frames:
                    raise FacegateError("invalid_request", f"a capture holds at most {max_frames} frames",
                                        max_frames=max_frames)
                yield t - t0, frame.to_ndarray(format="bgr24")
                count += 1
        except FacegateError:
            raise
        except Exception as exc:
            raise FacegateError("unsupported_image", f"the video could not be decoded: {type(exc).__name__}") from None
        if count == 0:
            raise FacegateError("unsupported_image", "the video has no decodable frames")
    finally:
        container.close()


def face_thumbnail(bgr: np.ndarray, box) -> np.ndarray:
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return crop_padded(grey, square_box(box), (64, 64)).astype(np.float32)


def repeated_fraction(capture: "Capture", observations) -> float:
    """Fraction of neighbouring frame pairs whose face regions are pixel-identical (both cut with
    the earlier frame's box)."""
    pairs = same = 0
    for a, b in zip(observations, observations[1:]):
        if a.box is None:
            continue
        ta = face_thumbnail(capture.frames[a.index].bgr, a.box)
        tb = face_thumbnail(capture.frames[b.index].bgr, a.box)
        pairs += 1
        same += float(np.abs(ta - tb).mean()) < REPEATED_PIXEL_DIFF
    return same / pairs if pairs else 0.0


def planar_residual(landmarks: list[np.ndarray]) -> float:
    """How far the face's 68 points move beyond what a flat picture can do.

    Each frame's points are fitted to the capture's median shape with a homography (any
    movement, rotation, scaling or tilting of a photo or screen is one); the RMS residual is in
    units of the outer eye-corner distance. Returned: the 90th percentile over frames. Blinks,
    mouth movements and real head turns (parallax of nose against cheeks) leave residuals a
    homography cannot absorb.
    """
    if len(landmarks) < 3:
        return 0.0
    ref = np.median(np.stack(landmarks), axis=0).astype(np.float32)
    iod = float(np.linalg.norm(ref[45] - ref[36])) + 1e-6
    devs = []
    for pts in landmarks:
        hmat, _ = cv2.findHomography(pts.astype(np.float32), ref, 0)
        if hmat is None:
            continue
        fitted = cv2.perspectiveTransform(pts.reshape(-1, 1, 2).astype(np.float32), hmat).reshape(-1, 2)
        devs.append(float(np.sqrt(((fitted - ref) ** 2).sum(axis=1).mean())) / iod)
    return float(np.percentile(devs, 90)) if devs else 0.0


def capture_checks(capture: Capture, observations) -> tuple[list[str], dict]:
    """Reasons the capture itself is not a natural live recording, and the measured figures."""
    reasons = []
    times = np.array([f.t for f in capture.frames])
    fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6) if len(times) > 1 else 0.0
    if capture.non_monotonic or (len(times) > 1 and np.any(np.diff(times) <= 0)):
        reasons.append("timestamps_not_monotonic")
    if len(times) > 1 and np.median(np.diff(np.sort(times))) > 1.0 / MIN_FPS:
        reasons.append("frame_rate_too_low")
    rep = repeated_fraction(capture, observations)
    if rep > REPEATED_MAX_FRACTION:
        reasons.append("repeated_frames")
    faced = [o for o in observations if o.has_face]
    change = planar_residual([o.landmarks68 for o in faced])
    if change < MIN_NONPLANAR_CHANGE:
        reasons.append("no_natural_motion")
    figures = {"frames": len(times), "duration_s": round(float(times[-1] - times[0]), 3) if len(times) else 0.0,
               "fps": round(float(fps), 2), "repeated_fraction": round(rep, 3),
               "nonplanar_change": round(change, 4)}
    return reasons, figures
