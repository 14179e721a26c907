"""East-Asian check: false matches and false non-matches on NUAA live webcam frames at the
LFW-calibrated default threshold.

    .venv/bin/python -m benchmarks.nuaa_verification
    .venv/bin/python -m benchmarks.nuaa_verification --write-pairs /tmp/nuaa    # a pair file for facegate eval/calibrate

``../shared/data/nuaa/live/<subject>/ID_glasses_position/lighting_session_frame.jpg``: 8 Chinese
volunteers, 24 frames each, 640x480 webcam. Every frame goes through the verification path a
kiosk uses (``engine.face(policy="largest")`` with its size and quality gates); frames it
refuses are counted (failure to acquire) and left out of the pair rates. Then:
  * impostor pairs: every pair of frames of different people;
  * genuine pairs: every pair of frames of one person, and separately only pairs from
    different sessions (frames of one session are seconds apart and nearly identical, so
    the across-session pairs are the meaningful ones; 3 of the 8 people have one session only);
  * FMR and FNMR at the default operating point (``target_fmr``; ``matching.decisions.threshold``)
    and at the other calibrated points, score distributions, and the closest impostor pairs of people;
  * the same without the quality gate (every frame's largest face), and, with
    ``--peer-python``, PyPI ``face_recognition`` on the same frames at its own default
    tolerance (distance <= 0.6), to tell a model weakness from hard data.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, add_shared_option
from facegate.config import Settings
from facegate.engine import FaceEngine
from facegate.errors import FacegateError
from facegate.evaluation.accuracy import auc
from facegate.matching.decisions import threshold
from facegate.matching.scores import similarity


@dataclass(frozen=True)
class Frame:
    path: Path
    subject: str
    glasses: str
    place: str       # position/lighting code
    session: str
    frame: str

    @classmethod
    def parse(cls, path: Path) -> "Frame":
        subject, glasses, place, session, frame = path.stem.split("_")
        return cls(path, subject, glasses, place, session, frame)


def nuaa_frames(root: Path) -> list[Frame]:
    return [Frame.parse(p) for p in sorted(root.glob("*/*.jpg"))]


def nuaa_pairs(frames: list[Frame]) -> list[tuple[Frame, Frame]]:
    """NUAA dev pairs: every cross-person pair of frames (all sessions) and every same-person
    pair of frames from different sessions (same-session frames are seconds apart)."""
    frames = sorted(frames, key=lambda f: f.path)
    return [(a, b) for a, b in itertools.combinations(frames, 2)
            if a.subject != b.subject or a.session != b.session]


def write_pairs(root: Path, out_dir: Path) -> Path:
    """``out_dir/nuaa-live-pairs.csv`` (``facegate.evaluation.pairs.write_pairs_csv``, paths
    relative to ``root``): the pairs of :func:`nuaa_pairs`, the first frame the enrolment."""
    from facegate.evaluation.pairs import write_pairs_csv

    frames = nuaa_frames(root)
    ids = {str(f.path.relative_to(root)): f.subject for f in frames}
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_pairs_csv(out_dir / "nuaa-live-pairs.csv",
                           [(str(a.path.relative_to(root)), str(b.path.relative_to(root))) for a, b in nuaa_pairs(frames)],
                           ids)


def capture_name(f: Frame) -> str:
    """A NUAA session as one capture: its frames share subject, glasses, place and session."""
    return f"{f.subject}_{f.glasses}_{f.place}_{f.session}"


def write_captures(root: Path, out_dir: Path) -> Path:
    """``out_dir/<capture>/`` (links to the session's frames, nothing copied) per NUAA session and
    ``out_dir/nuaa-capture-pairs.csv`` for ``facegate eval --operational --captures --images out_dir``:
    every ordered pair of captures of different people, and of one person's different sessions."""
    from facegate.evaluation.pairs import write_pairs_csv

    frames = nuaa_frames(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = {}
    for f in frames:
        folder = out_dir / capture_name(f)
        folder.mkdir(exist_ok=True)
        link = folder / f.path.name
        if not link.is_symlink():
            link.symlink_to(f.path.resolve())
        ids[capture_name(f)] = f.subject
    sessions = {capture_name(f): f.session for f in frames}
    pairs = [(a, b) for a in sorted(ids) for b in sorted(ids)
             if a != b and (ids[a] != ids[b] or sessions[a] != sessions[b])]
    return write_pairs_csv(out_dir / "nuaa-capture-pairs.csv", pairs, ids)


def embed_frames(engine: FaceEngine, frames: list[Frame], gated: bool = True
                 ) -> tuple[dict[Frame, np.ndarray], dict[Frame, str]]:
    """Embeddings of the frames the verification path accepts, and the refusal codes of the rest.
    ``gated=False``: the largest face of every frame, without the size and quality gates."""
    ok, failed = {}, {}
    for f in frames:
        try:
            if gated:
                ok[f] = engine.face(f.path.read_bytes(), policy="largest").embedding
            else:
                faces = engine.faces(f.path.read_bytes(), policy="largest")
                if faces:
                    ok[f] = faces[0].embedding
                else:
                    failed[f] = "no_face"
        except FacegateError as exc:
            failed[f] = exc.code
    return ok, failed


def pair_scores(emb: dict[Frame, np.ndarray], score=similarity
                ) -> dict[str, list[tuple[Frame, Frame, float]]]:
    out = {"impostor": [], "genuine": [], "genuine_across_sessions": []}
    for a, b in itertools.combinations(sorted(emb, key=lambda f: f.path), 2):
        s = score(emb[a], emb[b])
        if a.subject != b.subject:
            out["impostor"].append((a, b, s))
        else:
            out["genuine"].append((a, b, s))
            if a.session != b.session:
                out["genuine_across_sessions"].append((a, b, s))
    return out


def distribution(scores: np.ndarray) -> dict:
    if scores.size == 0:
        return {"n": 0}
    return {"n": int(scores.size), "min": round(float(scores.min()), 4), "mean": round(float(scores.mean()), 4),
            "median": round(float(np.median(scores)), 4), "max": round(float(scores.max()), 4)}


def rates_at_threshold(pairs: dict, t: float) -> dict:
    """Counts and rates with ``score >= t`` as a match."""
    out = {"threshold": t}
    imp = np.array([s for *_, s in pairs["impostor"]])
    out["false_matches"] = int((imp >= t).sum())
    out["fmr"] = round(float((imp >= t).mean()), 6) if imp.size else None
    out["false_matches_by_people"] = {f"{a}-{b}": n for (a, b), n in sorted(
        Counter((x.subject, y.subject) for x, y, s in pairs["impostor"] if s >= t).items())}
    for kind in ("genuine", "genuine_across_sessions"):
        g = np.array([s for *_, s in pairs[kind]])
        out[f"false_non_matches_{kind}"] = int((g < t).sum())
        out[f"fnmr_{kind}"] = round(float((g < t).mean()), 6) if g.size else None
    return out


def rates_at(engine: FaceEngine, pairs: dict, fmr: float | None) -> dict:
    """The rates at the calibrated point for ``fmr`` (None: the default, ``target_fmr``)."""
    point = threshold(engine.operating_points, fmr or engine.settings.target_fmr)
    return {"target_fmr": point.fmr, **rates_at_threshold(pairs, round(point.threshold, 6))}


def summary(pairs: dict) -> dict:
    imp_by_people: dict[tuple[str, str], float] = {}
    for a, b, s in pairs["impostor"]:
        key = (a.subject, b.subject)
        imp_by_people[key] = max(s, imp_by_people.get(key, -np.inf))
    closest = sorted(imp_by_people.items(), key=lambda kv: -kv[1])[:5]
    worst = min(pairs["genuine_across_sessions"] or pairs["genuine"], key=lambda t: t[2])
    imp = np.array([s for *_, s in pairs["impostor"]])
    gx = np.array([s for *_, s in pairs["genuine_across_sessions"]])
    separation = {  # threshold-free, so that two models with different score scales compare
        "auc_across_sessions": round(auc(gx, imp), 6),
        "fmr_at_zero_fnmr_across_sessions": round(float((imp >= gx.min()).mean()), 6),
        "fnmr_across_sessions_at_zero_fmr": round(float((gx <= imp.max()).mean()), 6),
    } if imp.size and gx.size else {}
    return {"separation": separation,"pairs": {k: len(v) for k, v in pairs.items()},
            "scores": {k: distribution(np.array([s for *_, s in v])) for k, v in pairs.items()},
            "closest_impostor_people": [{"people": list(k), "max_score": round(float(v), 4)} for k, v in closest],
            "worst_genuine_pair": [worst[0].path.name, worst[1].path.name, round(float(worst[2]), 4)]}


def peer_check(peer_python: str, frames: list[Frame], tolerance: float = 0.6) -> dict:
    """face_recognition on the same frames; score = minus the face distance, match at <= 0.6."""
    from benchmarks.engine_speed import Peer
    peer = Peer(peer_python)
    emb = {}
    try:
        for f in frames:
            out = peer.run(f.path, 1)
            if out["encoding"] is not None:
                emb[f] = np.array(out["encoding"])
    finally:
        peer.close()
    pairs = pair_scores(emb, score=lambda a, b: -float(np.linalg.norm(a - b)))
    return {"package": "face_recognition 1.3.0 (dlib), face nearest the centre",
            "frames_with_face": len(emb),
            "note": "scores are minus the face distance; the peer's default tolerance 0.6 is threshold -0.6",
            "at_default_tolerance": rates_at_threshold(pairs, -tolerance), **summary(pairs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shared_option(ap)
    ap.add_argument("--peer-python", default=os.environ.get("FACEGATE_PEER_PYTHON"),
                    help="python of a venv with face_recognition (optional)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "nuaa_verification.json"))
    ap.add_argument("--write-pairs", metavar="DIR", help="only write DIR/nuaa-live-pairs.csv (never into the "
                    "repository) for `facegate eval|calibrate --pairs ... --images <nuaa/live>`, and exit")
    ap.add_argument("--write-captures", metavar="DIR", help="only write DIR/<session>/ (links to the frames) and "
                    "DIR/nuaa-capture-pairs.csv for `facegate eval --operational --captures --images DIR`, and exit")
    args = ap.parse_args(argv)
    root = Path(args.shared) / "data" / "nuaa" / "live"
    if not root.is_dir():
        print(f"NUAA live frames not found at {root}; nothing to check", file=sys.stderr)
        return 2
    if args.write_captures:
        path = write_captures(root, Path(args.write_captures))
        print(f"{path} ({sum(1 for _ in open(path)) - 1} capture pairs; captures: {path.parent})")
        return 0
    if args.write_pairs:
        path = write_pairs(root, Path(args.write_pairs))
        print(f"{path} ({sum(1 for _ in open(path)) - 1} pairs; images: {root})")
        return 0

    engine = FaceEngine.load(Settings.load())
    frames = nuaa_frames(root)
    t0 = time.perf_counter()
    emb, failed = embed_frames(engine, frames)
    pairs = pair_scores(emb)
    per_subject = {}
    for subj in sorted({f.subject for f in frames}):
        g = np.array([s for a, b, s in pairs["genuine"] if a.subject == subj])
        gx = np.array([s for a, b, s in pairs["genuine_across_sessions"] if a.subject == subj])
        per_subject[subj] = {"frames_accepted": sum(f.subject == subj for f in emb),
                             "sessions": sorted({f.session for f in frames if f.subject == subj}),
                             "genuine_min": round(float(g.min()), 4) if g.size else None,
                             "genuine_across_sessions_min": round(float(gx.min()), 4) if gx.size else None}
    report = {
        "command": " ".join(["python", "-m", "benchmarks.nuaa_verification", *(argv or sys.argv[1:])]),
        "pack_id": engine.pack_id,
        "frames": len(frames),
        "subjects": len({f.subject for f in frames}),
        "path": "engine.face(policy='largest'): the verification path with its size and quality gates",
        "failed_to_acquire": {f.path.name: code for f, code in failed.items()},
        "failure_codes": dict(Counter(failed.values())),
        "at_default_threshold": rates_at(engine, pairs, None),
        "at_each_calibrated_point": [rates_at(engine, pairs, p["fmr"]) for p in engine.operating_points.points],
        **summary(pairs),
        "per_subject": per_subject,
    }
    all_emb, all_failed = embed_frames(engine, frames, gated=False)
    all_pairs = pair_scores(all_emb)
    report["without_quality_gate"] = {"frames_with_face": len(all_emb), "at_default_threshold": rates_at(engine, all_pairs, None),
                                      **summary(all_pairs)}
    report["seconds_facegate"] = round(time.perf_counter() - t0, 1)
    if args.peer_python:
        if Path(args.peer_python).exists():
            report["peer"] = peer_check(args.peer_python, frames)
        else:
            print(f"peer: {args.peer_python} not found; skipping the face_recognition comparison", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
