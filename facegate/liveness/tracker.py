"""Per-frame face observations for liveness: one face tracked through a capture, with its 68
landmarks, eye state, head pose, mouth opening and how much the face region changed.

Tracking can stop after any frame and go on later (on another replica): everything the next
frame needs is the last frame's :class:`FrameObservation` and that frame's pixels
(:class:`Continuation`), so a capture observed chunk by chunk gives exactly the observations
of the whole capture observed at once.

Cost per frame is kept low:
- the face detector (the engine's, 1 thread) runs on a copy whose long side is
  ``detect_side`` pixels, on the first frame and then every ``detect_every``-th frame (it
  counts the faces in view and re-anchors the track), and whenever the face moved more than a
  quarter of its width since the frame before;
- every crop is cut from the box made from the face's own 68 points of the frame before
  (:mod:`facegate.liveness.landmark_box`, fitted onto full MTCNN's boxes), so the models see the
  same crops whichever detector found the face;
- the 68 points and the eye state run on every frame (blinks last a few frames); the head
  pose model every ``pose_every``-th frame while the head is still and every
  ``pose_every_moving``-th while it turns or nods, its angles interpolated in time in between
  (:func:`fill_pose`).
Embeddings and passive PAD run only on sampled frames (see the judge).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from facegate.liveness.capture import face_difference, face_thumbnail
from facegate.liveness.eyes import EyeStateClassifier
from facegate.liveness.landmark_box import LandmarkBox
from facegate.liveness.landmarks import Landmarker68, eye_aspect_ratio, grey_of, mouth_aspect_ratio
from facegate.liveness.pose import HeadPoseEstimator

# Another face at least this fraction of the main face's size counts as a second person.
SECOND_FACE_RATIO = 0.4
# A face whose 68 points moved more than this fraction of its box width since the frame
# before is looked for again by the detector.
MAX_TRACKED_SHIFT = 0.25
# Yaw or pitch change between two pose measurements that counts as the head moving: above the
# pose model's jitter on a still head.
POSE_MOVING_DEGREES = 3.0

_ARRAYS = ("box", "landmarks5", "landmarks68")


@dataclass
class FrameObservation:
    index: int
    t: float
    detected: bool = False              # the detector ran on this frame
    faces: int = 0                      # faces of a person's size in the frame (detected frames)
    box: np.ndarray | None = None       # x1, y1, x2, y2 in frame pixels, from the 68 points
    landmarks5: np.ndarray | None = None    # the detector's five points (detected frames)
    landmarks68: np.ndarray | None = None
    eyes_open: tuple[float, float] = (1.0, 1.0)
    ear: float = float("nan")           # eye aspect ratio (both eyes' mean)
    mar: float = float("nan")           # inner-mouth aspect ratio
    yaw: float = float("nan")
    pitch: float = float("nan")
    roll: float = float("nan")
    pose_measured: bool = False         # yaw/pitch/roll from the pose model (else interpolated)
    difference: float | None = None     # mean |difference| of the face region from the frame before
    since_detect: int = 0               # frames since the detector last ran
    since_pose: int = 0                 # frames since the pose model last ran
    pose_step: int = 0                  # frames between pose measurements from here on (0: not yet set)
    pose_ref: list[float] | None = None     # yaw, pitch of the latest measurement

    @property
    def has_face(self) -> bool:
        return self.box is not None

    @property
    def both_eyes_closed(self) -> bool:
        return max(self.eyes_open) < 0.5

    def as_dict(self) -> dict:
        """JSON-safe and exact: arrays as lists of their own dtype's values, NaN as None."""
        out = asdict(self)
        for k in _ARRAYS:
            v = getattr(self, k)
            out[k] = None if v is None else [v.dtype.str, np.asarray(v).tolist()]
        for k in ("ear", "mar", "yaw", "pitch", "roll"):
            out[k] = None if not np.isfinite(out[k]) else out[k]
        out["eyes_open"] = list(self.eyes_open)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "FrameObservation":
        d = dict(d)
        for k in _ARRAYS:
            if d.get(k) is not None:
                dtype, values = d[k]
                d[k] = np.asarray(values, dtype=np.dtype(dtype))
        for k in ("ear", "mar", "yaw", "pitch", "roll"):
            d[k] = float("nan") if d.get(k) is None else float(d[k])
        d["eyes_open"] = tuple(d["eyes_open"])
        return cls(**d)


@dataclass
class Continuation:
    """Where tracking stands after a frame: its observation and its face thumbnail."""
    last: FrameObservation | None = None
    thumb: np.ndarray | None = None

    @classmethod
    def after(cls, obs: FrameObservation, bgr: np.ndarray) -> "Continuation":
        return cls(obs, None if obs.box is None else face_thumbnail(bgr, obs.box))


@dataclass
class TrackerTimes:
    frames: int = 0
    detections: int = 0
    poses: int = 0
    detect: float = 0.0
    landmarks: float = 0.0
    eyes: float = 0.0
    pose: float = 0.0
    extra: dict = field(default_factory=dict)

    def per_frame_ms(self) -> dict:
        n = max(self.frames, 1)
        return {k: round(1000 * v / n, 2) for k, v in
                (("detect", self.detect), ("landmarks", self.landmarks), ("eyes", self.eyes), ("pose", self.pose))}


def fill_pose(observations: list[FrameObservation]) -> None:
    """Yaw, pitch and roll of faced frames without a pose measurement, linearly interpolated in
    time between the measured frames around them (held beyond the first and last). In place."""
    faced = [o for o in observations if o.has_face]
    measured = [o for o in faced if o.pose_measured]
    if not measured:
        return
    ts = np.array([o.t for o in measured])
    for name in ("yaw", "pitch", "roll"):
        values = np.array([getattr(o, name) for o in measured])
        for o in faced:
            if not o.pose_measured:
                setattr(o, name, float(np.interp(o.t, ts, values)))


class FaceTracker:
    """Stateless between calls (one tracker serves concurrent requests): a capture's tracking
    state is the :class:`Continuation` handed in and out. ``times`` holds the last call's stage times."""

    def __init__(self, detector, landmarker: Landmarker68, eyes: EyeStateClassifier, pose: HeadPoseEstimator,
                 box_model: LandmarkBox, detect_side: int = 320, detect_every: int = 5, pose_every: int = 5,
                 pose_every_moving: int = 1, min_face_fraction: float = 0.12):
        self.detector = detector
        self.landmarker = landmarker
        self.eyes = eyes
        self.pose = pose
        self.box_model = box_model
        self.detect_side = detect_side
        self.min_face_fraction = min_face_fraction
        self.detect_every = max(1, int(detect_every))
        self.pose_every = max(1, int(pose_every))
        self.pose_every_moving = max(1, min(int(pose_every_moving), self.pose_every))
        self.times = TrackerTimes()

    def observe_all(self, frames, start: Continuation | None = None, first_index: int = 0) -> list[FrameObservation]:
        """Observations for (t, bgr) frames, continuing ``start`` (a new track when None); the
        first frame gets index ``first_index``. See :meth:`observe_chunk` for the continuation."""
        return self.observe_chunk(frames, start, first_index)[0]

    def observe_chunk(self, frames, start: Continuation | None = None,
                      first_index: int = 0) -> tuple[list[FrameObservation], Continuation]:
        times = TrackerTimes()
        out: list[FrameObservation] = []
        state = start or Continuation()
        for i, (t, bgr) in enumerate(frames, start=first_index):
            last = state.last
            grey = grey_of(bgr)
            obs = None
            if last is not None and last.has_face and last.since_detect + 1 < self.detect_every:
                obs = self._track(i, t, grey, last, times)
            if obs is None:
                obs = self._detect(i, t, bgr, grey, times)
            if obs.has_face:
                self._pose(obs, bgr, last if last is not None and last.has_face else None, times)
            obs.difference = face_difference(state.thumb, bgr, last.box if last is not None else None)
            out.append(obs)
            state = Continuation.after(obs, bgr)
        self.times = times
        return out, state

    def _pose(self, obs: FrameObservation, bgr: np.ndarray, carried: FrameObservation | None,
              times: TrackerTimes) -> None:
        """The pose model on detected frames and every ``pose_step``-th tracked frame: every
        ``pose_every``-th while the head is still, every ``pose_every_moving``-th once two
        measurements differ by ``POSE_MOVING_DEGREES`` (a turn or a nod under way), until they
        agree again."""
        obs.since_pose = 0 if carried is None else carried.since_pose + 1
        obs.pose_step = carried.pose_step if carried is not None and carried.pose_step else self.pose_every
        obs.pose_ref = None if carried is None else carried.pose_ref
        if not (obs.detected or obs.since_pose >= obs.pose_step):
            return
        t0 = time.perf_counter()
        obs.yaw, obs.pitch, obs.roll = self.pose(bgr, obs.box)
        times.pose += time.perf_counter() - t0
        times.poses += 1
        obs.pose_measured = True
        obs.since_pose = 0
        moving = obs.pose_ref is not None and max(abs(obs.yaw - obs.pose_ref[0]),
                                                  abs(obs.pitch - obs.pose_ref[1])) >= POSE_MOVING_DEGREES
        obs.pose_step = self.pose_every_moving if moving else self.pose_every
        obs.pose_ref = [obs.yaw, obs.pitch]

    def _points(self, grey: np.ndarray, box: np.ndarray, times: TrackerTimes) -> tuple[np.ndarray, np.ndarray]:
        """The 68 points found in ``box``, and the box made from them."""
        t0 = time.perf_counter()
        pts = self.landmarker(grey, box)
        times.landmarks += time.perf_counter() - t0
        return pts, self.box_model(pts)

    def _track(self, index: int, t: float, grey: np.ndarray, last: FrameObservation,
               times: TrackerTimes) -> FrameObservation | None:
        """The face found again in the box made from the previous frame's points."""
        pts, box = self._points(grey, last.box, times)
        width = last.box[2] - last.box[0]
        if np.linalg.norm(pts.mean(axis=0) - last.landmarks68.mean(axis=0)) > MAX_TRACKED_SHIFT * width:
            return None          # moved too far to trust the carried box: detect instead
        times.frames += 1
        obs = FrameObservation(index, t, detected=False, faces=last.faces, box=box,
                               since_detect=last.since_detect + 1)
        self._measure(obs, grey, pts, times)
        return obs

    def _measure(self, obs: FrameObservation, grey, pts, times: TrackerTimes) -> None:
        t0 = time.perf_counter()
        obs.landmarks68 = pts
        obs.ear = eye_aspect_ratio(pts)
        obs.mar = mouth_aspect_ratio(pts)
        obs.eyes_open = self.eyes.open_probabilities(grey, pts)
        times.eyes += time.perf_counter() - t0

    def _detect(self, index: int, t: float, bgr: np.ndarray, grey: np.ndarray, times: TrackerTimes) -> FrameObservation:
        obs = FrameObservation(index, t, detected=True)
        t0 = time.perf_counter()
        h, w = bgr.shape[:2]
        scale = min(1.0, self.detect_side / max(h, w))
        small = bgr if scale == 1.0 else cv2.resize(bgr, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        min_face = max(12, int(self.min_face_fraction * min(small.shape[:2])))
        dets = self.detector.detect(small, min_face=min_face)
        times.frames += 1
        times.detect += time.perf_counter() - t0
        times.detections += 1
        if not dets:
            return obs
        sizes = [min(d.box[2] - d.box[0], d.box[3] - d.box[1]) for d in dets]
        main = dets[int(np.argmax(sizes))]
        obs.faces = int(sum(s >= SECOND_FACE_RATIO * max(sizes) for s in sizes))
        obs.landmarks5 = main.landmarks / scale
        _, box = self._points(grey, main.box / scale, times)
        pts, obs.box = self._points(grey, box, times)
        self._measure(obs, grey, pts, times)
        return obs
