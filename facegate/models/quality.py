"""Face quality measures computed from the detection and the aligned crop.

Pose is estimated geometrically from the five landmarks (no extra model): roll from the eye
line, yaw from the nose's offset from the eye midpoint, pitch from the nose's height between
the eyes and the mouth. They are coarse (a few degrees near frontal, saturating as the nose reaches the eye) but
enough to refuse profile shots.

Exposure (``python -m benchmarks.exposure_normalisation``; benchmarks/results/operating_points.md):
on NUAA's webcam frames the embedder is as right on the over-exposed faces the old exposure aspect
refused (centre brightness 217-226, 37-49 % of it clipped) as on the dark ones it accepted (under
80): genuine scores lowest 0.458 and mean 0.655 against 0.423 and 0.715, the highest impostor
score 0.302 against 0.488. The bright side of the exposure aspect is fitted to that: it falls
from 1 at mid-grey to 0 at brightness 281 (``BRIGHT_SPAN``), so those frames score 0.36-0.42
instead of 0.12-0.19; the dark side is unchanged (less its clipped-pixel factor: dark faces have
almost none). No face is normalised before embedding, so enrolled templates stay valid: a gamma
or CLAHE made over-exposed faces' genuine scores lower and impostor scores higher, and a gamma on
dark faces, though it lowered their impostor scores, makes a template enrolled before it score up
to 0.473 against a look-alike's new probe (over the threshold it would allow).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from facegate.vocab import RefusalCause

# Mid-grey: the exposure aspect's best brightness.
TARGET_BRIGHTNESS = 128.0
# The bright side of the exposure aspect reaches 0 this far above mid-grey (the dark side: 128).
BRIGHT_SPAN = 153.0

# Nose height between eye line and mouth line on the ArcFace template: a frontal face.
_FRONTAL_NOSE_RATIO = (71.7366 - 51.5989) / (92.2848 - 51.5989)


@dataclass
class FaceQuality:
    face_size: float         # shorter side of the detection box, pixels
    inter_eye: float         # pixels
    sharpness: float         # variance of the Laplacian on the aligned 112x112 grey crop
    brightness: float        # mean grey level of the aligned crop's centre, 0..255
    clipped: float           # fraction of centre pixels at 0-5 or 250-255
    yaw: float               # degrees, + = face turned to the image's left
    pitch: float             # degrees, + = looking down
    roll: float              # degrees
    score: float             # 0..1 overall

    def as_dict(self) -> dict:
        return {k: round(float(v), 3) for k, v in asdict(self).items()}

    def aspects(self) -> dict[str, float]:
        """Each aspect's score, 0..1 (``score`` is the weakest)."""
        return aspect_scores(self.inter_eye, self.sharpness, self.brightness, self.yaw, self.pitch)

    @property
    def cause(self) -> RefusalCause:
        """The weakest aspect as what a person can change: ``too_far``, ``blurred``,
        ``too_bright``, ``too_dark`` or ``turned``."""
        aspects = self.aspects()
        weakest = min(aspects, key=aspects.get)
        if weakest == "exposure":
            return "too_bright" if self.brightness >= TARGET_BRIGHTNESS else "too_dark"
        return {"size": "too_far", "sharpness": "blurred", "pose": "turned"}[weakest]


def aspect_scores(inter_eye: float, sharpness: float, brightness: float, yaw: float, pitch: float) -> dict[str, float]:
    over = brightness - TARGET_BRIGHTNESS
    return {
        "size": float(np.clip((inter_eye - 8) / 24, 0, 1)),                  # 8 px -> 0, 32 px and up -> 1
        "sharpness": float(np.clip(sharpness / 60, 0, 1)),
        "exposure": float(np.clip(1 - (over / BRIGHT_SPAN if over > 0 else -over / TARGET_BRIGHTNESS), 0, 1)),
        "pose": float(np.clip((60 - max(abs(yaw), abs(pitch))) / 30, 0, 1)),  # full to 30 degrees, none past 60
    }


def estimate_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    le, re, nose, ml, mr = np.asarray(landmarks, dtype=np.float64)
    dx, dy = re - le
    roll = float(np.degrees(np.arctan2(dy, dx)))
    c, s = np.cos(np.radians(-roll)), np.sin(np.radians(-roll))
    rot = np.array([[c, -s], [s, c]])
    eye_mid = (le + re) / 2
    pts = (np.stack([le, re, nose, ml, mr]) - eye_mid) @ rot.T
    ied = max(pts[1, 0] - pts[0, 0], 1e-6)
    yaw_ratio = pts[2, 0] / (ied / 2)
    yaw = float(np.degrees(np.arctan(yaw_ratio)))
    mouth_y = (pts[3, 1] + pts[4, 1]) / 2
    nose_ratio = pts[2, 1] / mouth_y if mouth_y > 1e-6 else _FRONTAL_NOSE_RATIO
    pitch = float(np.degrees(np.arcsin(np.clip((nose_ratio - _FRONTAL_NOSE_RATIO) * 2, -1, 1))))
    return yaw, pitch, roll


def assess(box: np.ndarray, landmarks: np.ndarray, aligned_bgr: np.ndarray) -> FaceQuality:
    face_size = float(min(box[2] - box[0], box[3] - box[1]))
    inter_eye = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    grey = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    centre = grey[24:104, 24:88]
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    brightness = float(centre.mean())
    clipped = float(((centre <= 5) | (centre >= 250)).mean())
    yaw, pitch, roll = estimate_pose(landmarks)
    score = min(aspect_scores(inter_eye, sharpness, brightness, yaw, pitch).values())   # the weakest decides
    return FaceQuality(face_size, inter_eye, sharpness, brightness, clipped, yaw, pitch, roll, score)
