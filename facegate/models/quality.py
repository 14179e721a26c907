"""Face quality measures computed from the detection and the aligned crop.

Pose is estimated geometrically from the five landmarks (no extra model): roll from the eye
line, yaw from the nose's offset from the eye midpoint, pitch from the nose's height between
the eyes and the mouth. They are coarse (a few degrees near frontal, saturating as the nose reaches the eye) but
enough to refuse profile shots.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

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

    size_q = np.clip((inter_eye - 8) / 24, 0, 1)                 # 8 px -> 0, 32 px and up -> 1
    sharp_q = np.clip(sharpness / 60, 0, 1)
    exposure_q = np.clip(1 - abs(brightness - 128) / 128, 0, 1) * (1 - clipped)
    pose_q = np.clip((60 - max(abs(yaw), abs(pitch))) / 30, 0, 1)   # full to 30 degrees, none past 60
    score = float(min(size_q, sharp_q, exposure_q, pose_q))         # the weakest aspect decides
    return FaceQuality(face_size, inter_eye, sharpness, brightness, clipped, yaw, pitch, roll, score)
