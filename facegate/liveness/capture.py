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
from facegate.images import decode_image, decode_reduced, sniff_format
from facegate.liveness.crops import crop_padded, square_box

MIN_FPS = 8.0
REPEATED_PIXEL_DIFF = 0.02         # mean |difference| of 64x64 grey face crops: identical
REPEATED_MAX_FRACTION = 0.3
# Landmark movement a homography cannot explain (see planar_residual) below which a capture
# shows no natural motion.
MIN_NONPLANAR_CHANGE = 0.015
# Frames are reduced on arrival to this long side: the capture client sends at most 640 px, the
# judge detects on 320 px copies, and a face filling a phone or kiosk frame keeps ~200 px.
FRAME_SIDE = 640
# Stored frames are JPEG; uploads already within FRAME_SIDE are kept as sent (no second loss).
STORED_JPEG_QUALITY = 90


def reduce_frame(bgr: np.ndarray, side: int = FRAME_SIDE) -> np.ndarray:
    """The frame scaled down (never up) to a long side of at most ``side``."""
    h, w = bgr.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return bgr
    return cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def encode_frame(bgr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, STORED_JPEG_QUALITY])
    if not ok:
        raise FacegateError("unsupported_image", "the frame could not be re-encoded")
    return data.tobytes()


def stored_jpeg(data: bytes, max_bytes: int, max_pixels: int, side: int = FRAME_SIDE) -> bytes:
    """An uploaded frame as it is kept: decoded within the limits (so it is a real image), then
    the upload itself when it is a JPEG within ``side``, else reduced and re-encoded. A JPEG is
    first decoded at an eighth of its size (every coefficient is still read, so a broken or
    truncated file is refused), which is all a frame the page sent needs."""
    small, scale = decode_reduced(data, max_bytes, max_pixels, max_side=max(1, side // 8))
    if sniff_format(data) == "JPEG" and round(max(small.shape[:2]) / scale) <= side:
        return bytes(data)
    bgr = small if scale == 1.0 else decode_image(data, max_bytes, max_pixels)
    return encode_frame(reduce_frame(bgr, side))


@dataclass
class CaptureFrame:
    """One frame: decoded pixels, or the stored JPEG decoded each time it is looked at (a capture
    read back from the session store holds no pixels between uses)."""
    t: float
    pixels: np.ndarray | None = field(default=None, repr=False)
    data: bytes | None = field(default=None, repr=False)

    @property
    def bgr(self) -> np.ndarray:
        if self.pixels is not None:
            return self.pixels
        return cv2.imdecode(np.frombuffer(self.data, np.uint8), cv2.IMREAD_COLOR)


@dataclass
class Capture:
    """Frames collected for one session, in arrival order, with limits."""
    max_frames: int = 450
    max_seconds: float = 20.0
    frames: list[CaptureFrame] = field(default_factory=list)
    non_monotonic: bool = False

    def _check(self, t: float) -> float:
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
        return t

    def add(self, t: float, bgr: np.ndarray) -> None:
        """A decoded frame, reduced to ``FRAME_SIDE`` as the service reduces uploads."""
        self.frames.append(CaptureFrame(self._check(t), pixels=reduce_frame(bgr)))

    def add_stored(self, t: float, jpeg: bytes) -> None:
        """A frame as the session store keeps it (see :func:`stored_jpeg`)."""
        self.frames.append(CaptureFrame(self._check(t), data=jpeg))

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


def face_difference(previous_bgr_thumb: np.ndarray | None, bgr: np.ndarray, previous_box) -> float | None:
    """Mean |difference| between the previous frame's face region and this frame's same region
    (both cut with the previous frame's box); None when the previous frame had no face."""
    if previous_box is None or previous_bgr_thumb is None:
        return None
    return float(np.abs(previous_bgr_thumb - face_thumbnail(bgr, previous_box)).mean())


def repeated_fraction(differences: list[float | None]) -> float:
    """Fraction of neighbouring frame pairs whose face regions are pixel-identical."""
    pairs = [d for d in differences if d is not None]
    return sum(d < REPEATED_PIXEL_DIFF for d in pairs) / len(pairs) if pairs else 0.0


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


def capture_checks(capture: Capture, observations, differences: list[float | None]) -> tuple[list[str], dict]:
    """Reasons the capture itself is not a natural live recording, and the measured figures.
    ``differences``: per frame, :func:`face_difference` against the frame before."""
    reasons = []
    times = np.array([f.t for f in capture.frames])
    fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6) if len(times) > 1 else 0.0
    if capture.non_monotonic or (len(times) > 1 and np.any(np.diff(times) <= 0)):
        reasons.append("timestamps_not_monotonic")
    if len(times) > 1 and np.median(np.diff(np.sort(times))) > 1.0 / MIN_FPS:
        reasons.append("frame_rate_too_low")
    rep = repeated_fraction(differences)
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
