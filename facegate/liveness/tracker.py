"""Per-frame face observations for liveness: one face tracked through a capture, with its 68
landmarks, eye state, head pose and mouth opening.

Cost per frame is kept low: MTCNN runs on a copy whose long side is ``detect_side`` pixels
(faces in a liveness capture fill a good part of the frame), and only on every
``detect_every``-th frame; in between, the box is carried along by the 68 landmarks' centroid
(re-detecting when the face moved more than a quarter of its width). Landmarks, eyes and pose
run on every full-resolution frame. Embeddings and passive PAD run only on sampled frames (see judge).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from facegate.liveness.eyes import EyeStateClassifier
from facegate.liveness.landmarks import Landmarker68, eye_aspect_ratio, grey_of, mouth_aspect_ratio
from facegate.liveness.pose import HeadPoseEstimator

# Another face at least this fraction of the main face's size counts as a second person.
SECOND_FACE_RATIO = 0.4


@dataclass
class FrameObservation:
    index: int
    t: float
    detected: bool = False              # box from the detector (else carried by the landmarks)
    faces: int = 0                      # faces of a person's size in the frame
    box: np.ndarray | None = None       # x1, y1, x2, y2 in frame pixels
    landmarks5: np.ndarray | None = None
    landmarks68: np.ndarray | None = None
    eyes_open: tuple[float, float] = (1.0, 1.0)
    ear: float = float("nan")           # eye aspect ratio (both eyes' mean)
    mar: float = float("nan")           # inner-mouth aspect ratio
    yaw: float = float("nan")
    pitch: float = float("nan")
    roll: float = float("nan")

    @property
    def has_face(self) -> bool:
        return self.box is not None

    @property
    def both_eyes_closed(self) -> bool:
        return max(self.eyes_open) < 0.5


@dataclass
class TrackerTimes:
    frames: int = 0
    detections: int = 0
    detect: float = 0.0
    landmarks: float = 0.0
    eyes: float = 0.0
    pose: float = 0.0
    extra: dict = field(default_factory=dict)

    def per_frame_ms(self) -> dict:
        n = max(self.frames, 1)
        return {k: round(1000 * v / n, 2) for k, v in
                (("detect", self.detect), ("landmarks", self.landmarks), ("eyes", self.eyes), ("pose", self.pose))}


class FaceTracker:
    """Stateless between calls (one tracker serves concurrent requests): the tracking state of
    one capture lives in :meth:`observe_all`. ``times`` holds the stage times of the last call."""

    def __init__(self, detector, landmarker: Landmarker68, eyes: EyeStateClassifier, pose: HeadPoseEstimator,
                 detect_side: int = 320, detect_every: int = 1, min_face_fraction: float = 0.12):
        self.detector = detector
        self.landmarker = landmarker
        self.eyes = eyes
        self.pose = pose
        self.detect_side = detect_side
        self.min_face_fraction = min_face_fraction
        self.detect_every = max(1, int(detect_every))
        self.times = TrackerTimes()

    def observe_all(self, frames, on_frame=None) -> list[FrameObservation]:
        """Observations for a sequence of (t, bgr) frames, tracking the face between detections.
        ``on_frame(observation, bgr)`` sees each frame once, while it is decoded."""
        times = TrackerTimes()
        out: list[FrameObservation] = []
        last: FrameObservation | None = None
        since_detect = 0
        for i, (t, bgr) in enumerate(frames):
            obs = None
            if last is not None and last.has_face and since_detect < self.detect_every - 1:
                obs = self._track(i, t, bgr, last, times)
                since_detect += 1
            if obs is None:
                obs = self._detect(i, t, bgr, times)
                since_detect = 0
            out.append(obs)
            if on_frame is not None:
                on_frame(obs, bgr)
            last = obs
        self.times = times
        return out

    def _track(self, index: int, t: float, bgr: np.ndarray, last: FrameObservation,
               times: TrackerTimes) -> FrameObservation | None:
        """The face in the previous frame's box, the box moved with the landmarks' centroid."""
        t0 = time.perf_counter()
        grey = grey_of(bgr)
        pts = self.landmarker(grey, last.box)
        shift = pts.mean(axis=0) - last.landmarks68.mean(axis=0)
        t1 = time.perf_counter()
        times.landmarks += t1 - t0
        width = last.box[2] - last.box[0]
        if np.linalg.norm(shift) > 0.25 * width:
            return None          # moved too far to trust the carried box: detect instead
        times.frames += 1
        obs = FrameObservation(index, t, detected=False, faces=last.faces, box=last.box + np.tile(shift, 2))
        self._measure(obs, grey, bgr, pts, t1, times)
        return obs

    def _measure(self, obs: FrameObservation, grey, bgr, pts, t1: float, times: TrackerTimes) -> None:
        obs.landmarks68 = pts
        obs.ear = eye_aspect_ratio(pts)
        obs.mar = mouth_aspect_ratio(pts)
        obs.eyes_open = self.eyes.open_probabilities(grey, pts)
        t2 = time.perf_counter()
        obs.yaw, obs.pitch, obs.roll = self.pose(bgr, obs.box)
        t3 = time.perf_counter()
        times.eyes += t2 - t1
        times.pose += t3 - t2

    def _detect(self, index: int, t: float, bgr: np.ndarray, times: TrackerTimes) -> FrameObservation:
        obs = FrameObservation(index, t, detected=True)
        t0 = time.perf_counter()
        h, w = bgr.shape[:2]
        scale = min(1.0, self.detect_side / max(h, w))
        small = bgr if scale == 1.0 else cv2.resize(bgr, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        min_face = max(12, int(self.min_face_fraction * min(small.shape[:2])))
        dets = self.detector.detect(small, min_face=min_face)
        t1 = time.perf_counter()
        times.frames += 1
        times.detect += t1 - t0
        times.detections += 1
        if not dets:
            return obs
        sizes = [min(d.box[2] - d.box[0], d.box[3] - d.box[1]) for d in dets]
        main = dets[int(np.argmax(sizes))]
        obs.faces = int(sum(s >= SECOND_FACE_RATIO * max(sizes) for s in sizes))
        obs.box = main.box / scale
        obs.landmarks5 = main.landmarks / scale
        grey = grey_of(bgr)
        pts = self.landmarker(grey, obs.box)
        t2 = time.perf_counter()
        times.landmarks += t2 - t1
        self._measure(obs, grey, bgr, pts, t2, times)
        return obs
