"""The engine's one-face call with its stage times recorded in the metrics."""
from __future__ import annotations

from facegate.engine import MIN_QUALITY, Face, FaceEngine
from facegate.service import metrics


def analyse_face(engine: FaceEngine, image: bytes, policy: str = "single", min_face_px: int | None = None,
                 min_quality: float | None = MIN_QUALITY, detect_min_face: int | None = None) -> Face:
    """The one embedded face in ``image`` (``FaceEngine.face``); records decode/detect/align/embed
    latencies from the call's own times, not the engine's shared ``last_times``."""
    face = engine.face(image, policy=policy, min_face_px=min_face_px, min_quality=min_quality,
                       detect_min_face=detect_min_face)
    for stage in ("decode", "detect", "align", "embed"):
        metrics.STAGE_SECONDS.labels(stage).observe(getattr(face.times, stage))
    return face
