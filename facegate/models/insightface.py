"""Running a user's insightface pack (buffalo_l, antelopev2) or their own ArcFace-style ONNX.

``facegate models add DIR`` routes every ONNX file in DIR through insightface's
``model_zoo.get_model`` (which picks a class by the model's signature: SCRFD/RetinaFace for
detection, ArcFaceONNX for recognition, ...) and writes a manifest with checksums. The engine
then runs the pack's recognition model, and its detector when it has one (else the default
pack's MTCNN). insightface's own packs are licensed for non-commercial research only.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from facegate.errors import FacegateError
from facegate.models import mtcnn
from facegate.models.base import Detection, Detector
from facegate.models.pack import DEFAULT_PACK, MANIFEST, ModelPack, load_pack, sha256_file
from facegate.models.onnx import resolve_providers

log = logging.getLogger(__name__)

INSIGHTFACE_LICENCE_WARNING = (
    "insightface model packs (buffalo_l, antelopev2, ...) are licensed for NON-COMMERCIAL "
    "RESEARCH USE ONLY; a production deployment needs weights you hold a licence for"
)
KNOWN_INSIGHTFACE_PACKS = {"buffalo_l", "buffalo_m", "buffalo_s", "buffalo_sc", "antelopev2"}


def _route(path: Path, providers: list[str]):
    from insightface.model_zoo import model_zoo

    return model_zoo.get_model(str(path), providers=providers)


def register_folder(folder: Path, name: str | None = None, licence: str | None = None,
                    model_dir: Path | None = None) -> Path:
    """Write a facegate manifest for a folder of insightface-style ONNX files."""
    folder = Path(folder).resolve()
    files = sorted(folder.glob("*.onnx"))
    if not files:
        raise FacegateError("model_unavailable", f"no .onnx files in {folder}")
    providers = ["CPUExecutionProvider"]
    entries = []
    for f in files:
        model = _route(f, providers)
        task = getattr(model, "taskname", None) if model is not None else None
        if task is None:
            log.warning("%s: insightface's router does not recognise this model; skipped", f.name)
            continue
        sess = model.session
        entries.append({
            "name": f.stem, "task": task, "file": f.name, "sha256": sha256_file(f),
            "class": type(model).__name__,
            "inputs": [{"name": i.name, "shape": list(i.shape)} for i in sess.get_inputs()],
            "outputs": [{"name": o.name, "shape": list(o.shape)} for o in sess.get_outputs()],
            "colour_order": "BGR in, swapped to RGB by insightface",
            "pixel_scaling": f"(p - {getattr(model, 'input_mean', '?')}) / {getattr(model, 'input_std', '?')}",
            "source": {"package": "user-supplied", "version": None, "member": f.name,
                       "licence": licence or ("insightface non-commercial research only"
                                              if folder.name in KNOWN_INSIGHTFACE_PACKS else "unknown: user-supplied")},
        })
    recognisers = [e for e in entries if e["task"] == "recognition"]
    if len(recognisers) != 1:
        raise FacegateError("model_unavailable",
                            f"{folder} must hold exactly one recognition model; found {len(recognisers)}")
    manifest = {
        "format": 1, "kind": "insightface", "pack": name or folder.name,
        "pack_id": f"{name or folder.name}-{recognisers[0]['sha256'][:12]}",
        "embedding_dim": int(recognisers[0]["outputs"][0]["shape"][-1]),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": entries,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


class InsightFaceEmbedder:
    """Adapter from insightface's ArcFaceONNX to facegate's embedder interface."""

    def __init__(self, model):
        self.model = model
        self.dim = int(model.output_shape[-1])
        self.input_size = int(model.input_size[0])

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.empty((0, self.dim), dtype=np.float32)
        emb = np.concatenate([self.model.get_feat([c]) for c in crops]).astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb


class InsightFaceDetector:
    """Adapter from insightface's SCRFD/RetinaFace to facegate's detector interface."""

    smallest_face = 8      # SCRFD's finest anchors (stride 8)

    def __init__(self, model, input_size=(640, 640), threshold: float = 0.5):
        self.model = model
        self.input_size = input_size
        self.threshold = threshold

    def detect(self, bgr: np.ndarray, min_face: int = 20) -> list[Detection]:
        boxes, kps = self.model.detect(bgr, input_size=self.input_size, det_thresh=self.threshold)
        dets = []
        for i, b in enumerate(boxes if boxes is not None else []):
            if min(b[2] - b[0], b[3] - b[1]) < min_face or kps is None:
                continue
            dets.append(Detection(box=np.asarray(b[:4], np.float32), score=float(b[4]),
                                  landmarks=np.asarray(kps[i], np.float32)))
        dets.sort(key=lambda d: -d.score)
        return dets


def build(pack: ModelPack, settings) -> tuple[InsightFaceDetector | Detector, InsightFaceEmbedder]:
    """The pack's recogniser, and its detector when it has one (else the default pack's MTCNN)."""
    log.warning("loading pack %s: %s", pack.path, INSIGHTFACE_LICENCE_WARNING)
    providers = resolve_providers(settings.providers)
    recogniser = next(m for m in pack.manifest["models"] if m["task"] == "recognition")
    embedder = InsightFaceEmbedder(_route(pack.verified_path(recogniser["name"]), providers))
    detection = [m for m in pack.manifest["models"] if m["task"] == "detection"]
    if detection:
        return InsightFaceDetector(_route(pack.verified_path(detection[0]["name"]), providers)), embedder
    return mtcnn.load(load_pack(settings.model_dir, DEFAULT_PACK), settings), embedder
