"""The engine's one-face pipeline with each stage timed for the metrics.

Same steps and refusals as :meth:`FaceEngine.face` (decode, detect + choose, align + quality,
embed; ``no_face``, ``multiple_faces``, ``face_too_small``, ``low_quality``), but the stage
times are returned per call instead of kept on the shared engine, which several inference
threads use at once.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import cv2
import numpy as np

from facegate.engine import MIN_QUALITY, Face, FaceEngine
from facegate.errors import FacegateError
from facegate.models.alignment import align_face
from facegate.models.quality import assess
from facegate.service import metrics

log = logging.getLogger("facegate.service")


# No face fits in an image whose shorter side is below MTCNN's smallest window.
MIN_IMAGE_SIDE = 12


def decode_checked(engine: FaceEngine, image: bytes) -> np.ndarray:
    """Decode with the engine's limits and refuse images too thin to hold a face."""
    bgr = engine.decode(image)
    if min(bgr.shape[:2]) < MIN_IMAGE_SIDE:
        raise FacegateError("no_face", f"the image is {bgr.shape[1]}x{bgr.shape[0]} px: too small to hold a face")
    return bgr


def analyse_face(engine: FaceEngine, image: bytes, policy: str = "single", min_face_px: int | None = None,
                 min_quality: float | None = MIN_QUALITY, detect_min_face: int | None = None) -> Face:
    """The one embedded face in ``image``; records decode/detect/align/embed latencies."""
    with image_processing():
        return _analyse(engine, image, policy, min_face_px, min_quality, detect_min_face)


@contextmanager
def image_processing():
    """OpenCV refusing a degenerate input is the input's fault: ``unsupported_image``, not a 500."""
    try:
        yield
    except cv2.error as exc:
        log.warning("image processing failed: %s", str(exc).strip()[:300])
        raise FacegateError("unsupported_image", "the image could not be processed")


def _analyse(engine, image, policy, min_face_px, min_quality, detect_min_face) -> Face:
    if not hasattr(engine, "_select") or not hasattr(engine, "embedder"):
        decode_checked(engine, image)
        return engine.face(image, policy=policy, min_face_px=min_face_px, min_quality=min_quality)
    t0 = time.perf_counter()
    bgr = decode_checked(engine, image)
    t1 = time.perf_counter()
    metrics.STAGE_SECONDS.labels("decode").observe(t1 - t0)
    dets = engine._select(engine.detect(bgr, detect_min_face), bgr.shape, policy)
    t2 = time.perf_counter()
    metrics.STAGE_SECONDS.labels("detect").observe(t2 - t1)
    if not dets:
        raise FacegateError("no_face")
    d = dets[0]
    aligned = align_face(bgr, d.landmarks)
    face = Face(d.box, d.landmarks, d.score, assess(d.box, d.landmarks, aligned), aligned=aligned)
    t3 = time.perf_counter()
    metrics.STAGE_SECONDS.labels("align").observe(t3 - t2)
    need = min_face_px if min_face_px is not None else engine.settings.min_verify_face_px
    if face.quality.face_size < need:
        raise FacegateError("face_too_small", f"the face is {face.quality.face_size:.0f} px; "
                            f"at least {need} px is required", face_px=round(face.quality.face_size),
                            min_face_px=need)
    if min_quality is not None and face.quality.score < min_quality:
        raise FacegateError("low_quality", f"face quality {face.quality.score:.2f} is below {min_quality}",
                            quality=face.quality.as_dict())
    face.embedding = engine.embedder.embed([aligned])[0]
    metrics.STAGE_SECONDS.labels("embed").observe(time.perf_counter() - t3)
    return face
