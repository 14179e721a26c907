"""Person vs ID-card chip photo on LFW dev pairs (issue 6), and the chip operating points.

Each pair's second photo is turned into a chip-like portrait (``facegate.evaluation.documents.chip_photo``:
head-and-shoulders crop, 102x126 px, JPEG quality 60) and matched the way
``POST /v1/kiosk/authenticate`` does (largest face, small faces allowed). Reported next to the
full-resolution figures on the same pairs: cross-validated accuracy (LFW protocol), TAR at FAR
1e-3 / 1e-4 with FAR over every cross-identity (live photo, chip photo) pair.

    python -m benchmarks.kiosk_chip --pairs ../shared/data/lfw-dev/pairs.txt \
        --images ../shared/data/lfw-dev/images [--write-calibration]

(``--pairs`` and ``--images`` default to ``data/lfw-dev`` under ``$FACEGATE_SHARED`` or ../shared.)

``--write-calibration`` writes ``facegate/calibration/default-document.json``: thresholds at
FMR 1e-2..1e-5 from those impostor pairs, which the kiosk's document mode uses.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import REPO, shared_dir
from facegate.engine import load_engine
from facegate.evaluation.accuracy import auc, kfold_accuracy
from facegate.evaluation.documents import chip_photo
from facegate.evaluation.pairs import read_lfw_pairs
from facegate.matching.operating_points import compute_table, threshold_at_fmr


def embed_both(engine, images: Path, names: list[str]) -> tuple[dict, dict]:
    full, chip = {}, {}
    for i, name in enumerate(names):
        bgr = cv2.imread(str(images / name))
        faces = engine.faces(bgr, policy="central", min_face=20)
        if not faces:
            continue
        full[name] = faces[0].embedding
        c = engine.faces(chip_photo(bgr, faces[0].box), policy="largest", min_face=20)
        if c:
            chip[name] = c[0].embedding
        if (i + 1) % 500 == 0:
            print(f"  {i + 1}/{len(names)}", file=sys.stderr, flush=True)
    return full, chip


def cross_scores(full: dict, chip: dict, ids: dict) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) scores over every (live photo, chip photo of another photo) pair."""
    a_names = sorted(full)
    b_names = sorted(chip)
    a = np.stack([full[n] for n in a_names])
    b = np.stack([chip[n] for n in b_names])
    a_ids = np.array([ids[n] for n in a_names])
    b_ids = np.array([ids[n] for n in b_names])
    b_index = {n: j for j, n in enumerate(b_names)}
    genuine, impostor = [], []
    for i in range(0, len(a_names), 512):
        block = a[i:i + 512] @ b.T
        same = a_ids[i:i + 512, None] == b_ids[None, :]
        for r, n in enumerate(a_names[i:i + 512]):          # the chip made from the same photo is not a pair
            if n in b_index:
                same[r, b_index[n]] = False
                block[r, b_index[n]] = np.nan
        diff = ~same & ~np.isnan(block)
        genuine.append(block[same])
        impostor.append(block[diff])
    return np.concatenate(genuine).astype(np.float64), np.concatenate(impostor).astype(np.float64)


def pair_metrics(pairset, a_emb: dict, b_emb: dict, impostor_all: np.ndarray) -> dict:
    n = len(pairset.pairs)
    scores = np.full(n, np.nan)
    ok = np.zeros(n, bool)
    for i, p in enumerate(pairset.pairs):
        if p.a in a_emb and p.b in b_emb:
            scores[i] = float(a_emb[p.a] @ b_emb[p.b])
            ok[i] = True
    same = np.array([p.same for p in pairset.pairs])
    fold = np.array([p.fold for p in pairset.pairs])
    acc, std, _ = kfold_accuracy(scores, same, fold, ok)
    tar = {far: round(float((scores[same & ok] >= threshold_at_fmr(impostor_all, float(far))).sum() / same.sum()), 4)
           for far in ("0.001", "0.0001")}
    return {"accuracy": round(acc, 4), "accuracy_std": round(std, 4), "auc": round(auc(scores[same & ok], scores[~same & ok]), 5),
            "tar_at_far": tar, "failed_pairs": int((~ok).sum()), "impostor_pairs_for_far": int(impostor_all.size)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lfw = shared_dir() / "data" / "lfw-dev"
    ap.add_argument("--pairs", default=str(lfw / "pairs.txt"))
    ap.add_argument("--images", default=str(lfw / "images"))
    ap.add_argument("--write-calibration", action="store_true")
    args = ap.parse_args()
    engine = load_engine()
    pairset = read_lfw_pairs(Path(args.pairs))
    t0 = time.time()
    full, chip = embed_both(engine, Path(args.images), pairset.images)
    print(f"embedded {len(full)} photos and {len(chip)} chip photos in {time.time() - t0:.0f}s", file=sys.stderr)
    ids = pairset.identities
    full_names = [n for n in sorted(full)]
    m = np.stack([full[n] for n in full_names])
    fid = np.array([ids[n] for n in full_names])
    iu = np.triu_indices(len(full_names), 1)
    sims = (m @ m.T)[iu]
    full_impostor = sims[fid[iu[0]] != fid[iu[1]]].astype(np.float64)
    genuine_chip, impostor_chip = cross_scores(full, chip, ids)
    result = {
        "chip_photo": {"size": "102x126", "jpeg_quality": 60},
        "chip_faces_found": f"{len(chip)}/{len(full)}",
        "full_resolution": pair_metrics(pairset, full, full, full_impostor),
        "live_vs_chip": pair_metrics(pairset, full, chip, impostor_chip),
    }
    default = engine.operating_points.threshold_for(engine.settings.target_fmr)[0]
    result["live_vs_chip"]["fmr_at_full_resolution_default_threshold"] = float((impostor_chip >= default).mean())
    table = compute_table(genuine_chip, impostor_chip)
    result["chip_operating_points"] = table
    print(json.dumps(result, indent=2))
    if args.write_calibration:
        out = REPO / "facegate" / "calibration" / f"{engine.pack.manifest['pack']}-document.json"
        out.write_text(json.dumps({
            "pack": engine.pack.manifest["pack"], "pack_id": engine.pack_id,
            "embedder_upstream_sha256": engine.pack.entry("fr_feature")["source"]["upstream_sha256"],
            "variant": "document: one side an ID-card chip photo (102x126 px, JPEG q60)",
            "made_with": f"python -m benchmarks.kiosk_chip --pairs {args.pairs} --images {args.images} --write-calibration",
            "impostor_pairs": int(impostor_chip.size), "genuine_pairs": int(genuine_chip.size),
            "impostor_source": "every cross-identity (live photo, chip photo) pair of the photos",
            "points": table}, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
