"""Operational evaluation on captures: each attempt is a folder of consecutive frames, decided on
the best of what it offers instead of on one frame (``facegate eval --operational --captures``).

A pair file (``file_x,file_y,Decision,identity_x,identity_y``) names capture folders relative to
``--images``; the first is the enrolment, the second the probe:

* the **enrolment** is the capture's best frame (highest quality) that passes ``Gallery.enrol``'s
  gate (policy ``single``, ``min_enrol_face_px``, the quality gate), as an operator keeps the
  camera's best shot;
* the **probe** is decided as certification decides a liveness capture: the frames the judge
  embeds (up to ``MAX_IDENTITY_SAMPLES`` evenly spaced frames; the near-frontal ones, ``|yaw| <
  FRONTAL_DEGREES``, where there are any), fused into one template (their normalised mean). Each
  frame goes through ``/v1/verify``'s gate first, so a refused frame is left out instead of
  failing the attempt; the template's quality is the lowest of its frames' (its quality band
  and the review rule follow from it);
* a capture with no frame through the gate is a **failure to acquire**.

Acquired pairs are then decided exactly as :func:`facegate.evaluation.operational.decide_pairs`
decides photo pairs (operating point with the probe's quality band, review band and
``review_min_quality``); the report is the same, over capture pairs, plus per-capture counts
(``captures``: captures, acquired per role, frames used).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from facegate.engine import MIN_QUALITY
from facegate.errors import FacegateError
from facegate.evaluation.operational import Sample, decide_pairs
from facegate.evaluation.pairs import PairSet

MAX_IDENTITY_SAMPLES = 12      # as the liveness judge: frames embedded per capture
FRONTAL_DEGREES = 20.0
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_FRAMES = 600               # per capture folder; more is refused (a bounded input)


def capture_frames(folder: Path) -> list[Path]:
    """The capture's frames in order (numbers in names sort numerically: ``..._38`` before ``..._123``)."""
    frames = [p for p in Path(folder).iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()]
    if len(frames) > MAX_FRAMES:
        raise FacegateError("invalid_request", f"{folder}: {len(frames)} frames; at most {MAX_FRAMES} per capture")

    def order(p: Path):
        tail = p.stem.rsplit("_", 1)[-1]
        return (p.stem.rsplit("_", 1)[0], int(tail) if tail.isdigit() else -1, p.name)
    return sorted(frames, key=order)


def fuse(embeddings: list[np.ndarray]) -> np.ndarray:
    mean = np.mean(np.asarray(embeddings, dtype=np.float64), axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def acquire_capture(engine, folder: Path, role: str) -> tuple[Sample, dict]:
    """The capture as the enrolment (its best acquired frame) or the probe (the judge's frames of
    it, fused); with what happened to its frames."""
    s = engine.settings
    need = s.min_enrol_face_px if role == "enrol" else None
    faces, refused = [], Counter()
    for path in capture_frames(folder):
        try:
            faces.append(engine.face(path.read_bytes(), policy="single", min_face_px=need, min_quality=MIN_QUALITY))
        except FacegateError as exc:
            refused[exc.detail.get("cause") or exc.code] += 1
    info = {"frames": len(faces) + sum(refused.values()), "acquired_frames": len(faces), "refused": dict(refused)}
    if not faces:
        return Sample(None, None, "no_usable_frame"), info
    if role == "enrol":
        best = max(faces, key=lambda f: f.quality.score)
        info["used_frames"] = 1
        return Sample(best.embedding, float(best.quality.score)), info
    step = max(1, int(np.ceil(len(faces) / MAX_IDENTITY_SAMPLES)))
    picks = faces[::step]
    frontal = [f for f in picks if abs(f.quality.yaw) < FRONTAL_DEGREES] or picks
    info["used_frames"] = len(frontal)
    return Sample(fuse([f.embedding for f in frontal]), min(float(f.quality.score) for f in frontal)), info


def acquire_captures(engine, root: Path, pairset: PairSet) -> tuple[dict, dict]:
    """(name, role) -> Sample for every capture in the role(s) the pairs use it in, and per
    (name, role) what happened to its frames."""
    wanted = sorted({(p.a, "enrol") for p in pairset.pairs} | {(p.b, "probe") for p in pairset.pairs})
    samples, infos = {}, {}
    for name, role in wanted:
        folder = Path(root) / name
        if not folder.is_dir():
            samples[(name, role)], infos[(name, role)] = Sample(None, None, "missing_capture"), {}
            continue
        samples[(name, role)], infos[(name, role)] = acquire_capture(engine, folder, role)
    return samples, infos


def decide_captures(engine, pairset: PairSet, samples: dict, infos: dict, fmr: float | None = None) -> dict:
    """:func:`~facegate.evaluation.operational.decide_pairs` over capture pairs, plus per-capture counts."""
    report = decide_pairs(engine, pairset, samples, fmr)
    report["mode"] = "operational_captures"
    per_role = {}
    for role in ("enrol", "probe"):
        mine = {n: s for (n, r), s in samples.items() if r == role}
        frames = [infos[(n, role)] for n in mine if infos.get((n, role))]
        refused = Counter()
        for f in frames:
            refused.update(f["refused"])
        per_role[role] = {"captures": len(mine), "acquired": sum(s.acquired for s in mine.values()),
                          "fta_rate": round(sum(not s.acquired for s in mine.values()) / len(mine), 6) if mine else None,
                          "frames": sum(f["frames"] for f in frames),
                          "frames_refused_by_cause": dict(sorted(refused.items())),
                          "frames_fused_median": float(np.median([f.get("used_frames", 0) for f in frames])) if frames else None}
    report["captures"] = per_role
    return report
