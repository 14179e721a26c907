"""The face engine: image in, faces with boxes, landmarks, quality and embeddings out.

    engine = FaceEngine.load()
    face = engine.face(open("a.jpg", "rb").read())          # the one face to match
    score = similarity(face.embedding, other.embedding)     # facegate.matching.scores
    decide_1to1(score, threshold(engine.operating_points, fmr), ...)   # facegate.matching.decisions

The engine makes no decisions: it measures, and carries the pack's calibrated operating points
for the matching layer to decide with.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np

from facegate.config import Settings
from facegate.errors import FacegateError
from facegate.images import decode_reduced
from facegate.matching.operating_points import OperatingPoints
from facegate.models import registry
from facegate.models.alignment import align_face
from facegate.models.base import Detection, Detector, Embedder
from facegate.models.pack import ModelPack, load_pack
from facegate.models.quality import FaceQuality, assess
from facegate.vocab import FACE_POLICIES, FacePolicy

log = logging.getLogger(__name__)

Policy = FacePolicy
POLICIES = FACE_POLICIES

# Detection runs on a copy whose long side is at most this; boxes are mapped back.
DETECT_MAX_SIDE = 1280
# A JPEG larger than this is decoded reduced by libjpeg (faces keep twice the detection scale).
DECODE_MAX_SIDE = 2 * DETECT_MAX_SIDE
# With policy "single", another face at least this fraction of the main face's size counts
# as a second person (smaller ones are background faces, e.g. on a poster behind a kiosk user).
SECOND_FACE_RATIO = 0.4
MIN_QUALITY = 0.2
# Images up to this side get a second, upscaled detection pass when the first finds nothing:
# ID-card chip portraits and 250 px crops hold faces near a detector's coarsest scale.
SMALL_IMAGE_SIDE = 400


@dataclass
class StageTimes:
    """Seconds spent in each stage of one call."""
    decode: float = 0.0
    detect: float = 0.0
    align: float = 0.0
    embed: float = 0.0
    second: float = 0.0     # the second opinion's embedding, when one was asked for


@dataclass
class Face:
    box: np.ndarray
    landmarks: np.ndarray
    det_score: float
    quality: FaceQuality
    embedding: np.ndarray | None = None
    second_embedding: np.ndarray | None = field(default=None, repr=False)   # by the pack's second opinion
    aligned: np.ndarray | None = field(default=None, repr=False)
    times: StageTimes = field(default_factory=StageTimes, repr=False)   # of the call that found it

    def as_dict(self, with_embedding: bool = False) -> dict:
        out = {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "det_score": round(self.det_score, 4),
            "quality": self.quality.as_dict(),
        }
        if with_embedding and self.embedding is not None:
            out["embedding"] = [round(float(v), 6) for v in self.embedding]
        return out


class FaceEngine:
    """Detection, alignment, quality and embedding on one model pack."""

    def __init__(self, pack: ModelPack, detector: Detector, embedder: Embedder, settings: Settings,
                 operating_points: OperatingPoints | None, second: Embedder | None = None,
                 second_model: str | None = None, fused_points: OperatingPoints | None = None):
        self.pack = pack
        self.detector = detector
        self.embedder = embedder
        self.settings = settings
        self.operating_points = operating_points
        # The second opinion (SFace in the default pack): embedded on demand from the same aligned
        # crop; its fused table (mean of the two cosines) holds the 1:N points that use it.
        self.second = second
        self.second_model = second_model if second is not None else None
        self.fused_points = fused_points if second is not None else None
        self.last_times = StageTimes()      # of the latest call, for single-threaded tools

    # ---------------------------------------------------------------- construction
    @classmethod
    def load(cls, settings: Settings | None = None) -> "FaceEngine":
        settings = settings or Settings.load()
        pack = load_pack(settings.model_dir, settings.pack)
        detector, embedder = registry.build(pack, settings)
        # the deployment's population table (FACEGATE_POPULATION) when it names one
        points = OperatingPoints.for_pack(pack, population=settings.population or None)
        second_model, second = registry.second_opinion(pack, settings)
        fused = OperatingPoints.for_pack(pack, variant=f"fused-{second_model}") if second is not None else None
        return cls(pack, detector, embedder, settings, points, second, second_model, fused)

    @property
    def pack_id(self) -> str:
        return self.pack.pack_id

    # ---------------------------------------------------------------- pipeline
    def decode(self, image: bytes | np.ndarray) -> tuple[np.ndarray, float]:
        """The image as BGR pixels and its scale (pixels per pixel of the file): a JPEG larger
        than ``DECODE_MAX_SIDE`` is decoded reduced, and boxes are mapped back to the file's pixels."""
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise FacegateError("unsupported_image", "arrays must be HxWx3 uint8 BGR")
            return image, 1.0
        return decode_reduced(image, self.settings.max_image_bytes, self.settings.max_image_pixels, DECODE_MAX_SIDE)

    def _decode_for_detection(self, image: bytes | np.ndarray) -> tuple[np.ndarray, float]:
        bgr, scale = self.decode(image)
        if min(bgr.shape[:2]) < self.detector.smallest_face:
            raise FacegateError("no_face", f"the image is {bgr.shape[1]}x{bgr.shape[0]} px: too small to hold a face")
        return bgr, scale

    def detect(self, bgr: np.ndarray, min_face: int | None = None) -> list[Detection]:
        min_face = int(min_face or self.settings.min_face_px)
        h, w = bgr.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = bgr if scale == 1.0 else cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                    interpolation=cv2.INTER_AREA)
        smallest = self.detector.smallest_face
        dets = self.detector.detect(small, min_face=max(smallest, int(min_face * scale)))
        if not dets and max(h, w) <= SMALL_IMAGE_SIDE:
            up = cv2.resize(bgr, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC)
            dets = self.detector.detect(up, min_face=max(smallest, min_face))
            scale = 2.0
        if scale != 1.0:
            for d in dets:
                d.box /= scale
                d.landmarks /= scale
        return dets

    def _select(self, dets: list[Detection], shape, policy: Policy) -> list[Detection]:
        if not dets:
            return []
        size = [min(d.box[2] - d.box[0], d.box[3] - d.box[1]) for d in dets]
        if policy == "all":
            return dets
        if policy == "single":
            biggest = max(size)
            people = sum(s >= SECOND_FACE_RATIO * biggest for s in size)
            if people > 1:
                raise FacegateError("multiple_faces", f"{people} faces found; exactly one is required",
                                    faces=int(people), cause="second_face")
            return [dets[int(np.argmax(size))]]
        if policy == "largest":
            return [dets[int(np.argmax(size))]]
        if policy == "central":
            cy, cx = shape[0] / 2, shape[1] / 2
            dist = [np.hypot((d.box[0] + d.box[2]) / 2 - cx, (d.box[1] + d.box[3]) / 2 - cy) for d in dets]
            return [dets[int(np.argmin(dist))]]
        raise FacegateError("invalid_request", f"unknown face policy {policy!r}; use one of {POLICIES}")

    def faces(self, image: bytes | np.ndarray, policy: Policy = "largest", embed: bool = True,
              min_face: int | None = None) -> list[Face]:
        """All faces chosen by ``policy`` (``all`` returns every face), possibly none; boxes,
        landmarks and sizes in the file's pixels."""
        t0 = time.perf_counter()
        try:
            with _degenerate_input():
                bgr, scale = self._decode_for_detection(image)
        except FacegateError as exc:
            if exc.code == "no_face":
                return []
            raise
        return self._faces(bgr, scale, policy, embed, min_face, time.perf_counter() - t0)

    def _faces(self, bgr: np.ndarray, scale: float, policy: Policy, embed: bool, min_face: int | None,
               decode_s: float) -> list[Face]:
        with _degenerate_input():
            t1 = time.perf_counter()
            min_face = int(min_face or self.settings.min_face_px)
            dets = self._select(self.detect(bgr, max(1, round(min_face * scale))), bgr.shape, policy)
            t2 = time.perf_counter()
            times = StageTimes(decode_s, t2 - t1)
            faces = []
            for d in dets:
                aligned = align_face(bgr, d.landmarks)
                box, points = d.box / scale, d.landmarks / scale
                faces.append(Face(box, points, d.score, assess(box, points, aligned), aligned=aligned, times=times))
            times.align = time.perf_counter() - t2
            if embed:
                self._embed(faces)
        self.last_times = times
        return faces

    def _embed(self, faces: list[Face]) -> None:
        if not faces:
            return
        t0 = time.perf_counter()
        for f, e in zip(faces, self.embedder.embed([f.aligned for f in faces])):
            f.embedding = e
        faces[0].times.embed = time.perf_counter() - t0

    def second_embedding(self, face: Face) -> np.ndarray | None:
        """The face's embedding by the pack's second opinion (computed once, from the aligned
        crop); None when the engine has none or the face has no crop."""
        if self.second is None or face.aligned is None:
            return None
        if face.second_embedding is None:
            t0 = time.perf_counter()
            face.second_embedding = self.second.embed([face.aligned])[0]
            face.times.second = time.perf_counter() - t0
        return face.second_embedding

    def face(self, image: bytes | np.ndarray, policy: Policy = "single", min_face_px: int | None = None,
             min_quality: float | None = MIN_QUALITY, detect_min_face: int | None = None) -> Face:
        """The one face to match, embedded; raises ``no_face``, ``multiple_faces``,
        ``face_too_small`` or ``low_quality`` (checked before the embedding is computed).

        ``min_face_px``: the smallest acceptable face (default ``min_verify_face_px``);
        ``detect_min_face``: the smallest face the detector looks for (default ``min_face_px``
        of the settings). ``face.times`` holds this call's stage times."""
        if policy == "all":
            raise FacegateError("invalid_request", "policy 'all' returns several faces; use faces()")
        t0 = time.perf_counter()
        with _degenerate_input():
            bgr, scale = self._decode_for_detection(image)
        faces = self._faces(bgr, scale, policy, False, detect_min_face, time.perf_counter() - t0)
        if not faces:
            raise FacegateError("no_face")
        face = faces[0]
        need = min_face_px if min_face_px is not None else self.settings.min_verify_face_px
        if face.quality.face_size < need:
            raise FacegateError("face_too_small", f"the face is {face.quality.face_size:.0f} px; "
                                f"at least {need} px is required", face_px=round(face.quality.face_size),
                                min_face_px=need, cause="too_far")
        if min_quality is not None and face.quality.score < min_quality:
            raise FacegateError("low_quality", f"face quality {face.quality.score:.2f} is below {min_quality}",
                                quality=face.quality.as_dict(), cause=face.quality.cause)
        self._embed([face])
        return face

    def embed_many(self, images: list[bytes | np.ndarray], policy: Policy = "central") -> list[Face | FacegateError]:
        """Batch embedding: detect each image, then embed all chosen faces in batches."""
        chosen: list[Face | FacegateError] = []
        for img in images:
            try:
                faces = self.faces(img, policy, embed=False)
                chosen.append(faces[0] if faces else FacegateError("no_face"))
            except FacegateError as exc:
                chosen.append(exc)
        ok = [f for f in chosen if isinstance(f, Face)]
        for f, e in zip(ok, self.embedder.embed([f.aligned for f in ok])):
            f.embedding = e
        return chosen


@contextmanager
def _degenerate_input():
    """OpenCV refusing a degenerate image is the input's fault: ``unsupported_image``."""
    try:
        yield
    except cv2.error as exc:
        log.warning("image processing failed: %s", str(exc).strip()[:300])
        raise FacegateError("unsupported_image", "the image could not be processed")


def load_engine(**overrides) -> FaceEngine:
    """The engine on the configured model pack (``FACEGATE_MODEL_DIR``, ``FACEGATE_PACK``)."""
    return FaceEngine.load(Settings.load(**overrides))
