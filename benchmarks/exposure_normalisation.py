"""Exposure normalisation chosen by measurement: what a per-face gamma or CLAHE on luminance does to
genuine and impostor scores of over-exposed and dark faces (NUAA dev live frames, lfw-dev).

    .venv/bin/python -m benchmarks.exposure_normalisation            # the tables of results/operating_points.md
    .venv/bin/python -m benchmarks.exposure_normalisation --json

Every photo's face (policy ``largest``, no gate) is aligned as the engine aligns it; the aligned
crop is embedded as it is (``raw``) and after each normalisation, applied only to the faces of one
group: ``over`` (quality under the gate's 0.2 with the old exposure aspect, i.e. centre brightness
over ~200 with a third or more clipped) or ``dark`` (centre brightness under 80). Pairs: NUAA's
cross-person frame pairs as impostors, same-person pairs across sessions as genuine; lfw-dev's
cross-identity pairs of the pair photos as impostors, its genuine pairs.txt pairs as genuine.
Reported per variant: the lowest and mean genuine score and the highest impostor score of pairs
with a face of the group, and the highest impostor score overall; per group, the cosine between a
face's raw and gamma embeddings, and the group's raw embeddings (templates enrolled before the
normalisation) against every face embedded the new way.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import add_shared_option
from facegate.engine import load_engine
from facegate.evaluation.pairs import read_pairs
from facegate.models.alignment import align_face

OLD_GATE = 0.2


def clahe(crop: np.ndarray, clip: float = 2.0, tiles: int = 4) -> np.ndarray:
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    lab[..., 0] = cv2.createCLAHE(clip, (tiles, tiles)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def gamma(crop: np.ndarray, target: float = 128.0) -> np.ndarray:
    level = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[24:104, 24:88].mean() / 255.0
    g = np.log(target / 255.0) / np.log(min(max(level, 1e-3), 0.999))
    return cv2.LUT(crop, np.clip(255.0 * (np.arange(256) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8))


VARIANTS = {"raw": None, "gamma to 128": gamma, "CLAHE clip 2, 4x4": clahe,
            "CLAHE clip 2, 8x8": lambda c: clahe(c, 2.0, 8), "CLAHE clip 4, 4x4": lambda c: clahe(c, 4.0, 4)}


def faces(engine, paths: list[Path]) -> dict:
    """Aligned crops (un-normalised), centre brightness, clipped fraction of every photo with a face."""
    crops, bright, clipped, keep = [], [], [], []
    for i, p in enumerate(paths):
        bgr, _ = engine.decode(p.read_bytes())
        dets = engine.detect(bgr)
        if not dets:
            continue
        d = max(dets, key=lambda d: min(d.box[2] - d.box[0], d.box[3] - d.box[1]))
        crop = align_face(bgr, d.landmarks)
        centre = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[24:104, 24:88]
        crops.append(crop)
        bright.append(float(centre.mean()))
        clipped.append(float(((centre <= 5) | (centre >= 250)).mean()))
        keep.append(i)
    return {"crops": crops, "brightness": np.array(bright), "clipped": np.array(clipped), "index": keep}


def old_exposure(brightness: np.ndarray, clipped: np.ndarray) -> np.ndarray:
    """The exposure aspect before its bright side was re-fitted (facegate 22's quality score)."""
    return np.clip(1 - abs(brightness - 128) / 128, 0, 1) * (1 - clipped)


def measure(engine, f: dict, genuine: np.ndarray, impostor: np.ndarray) -> dict:
    raw = engine.embedder.embed(f["crops"])
    groups = {"over": old_exposure(f["brightness"], f["clipped"]) < OLD_GATE, "dark": f["brightness"] < 80}
    out = {"faces": len(f["crops"]), "group_sizes": {k: int(v.sum()) for k, v in groups.items()}}
    iu = np.triu_indices(len(raw), 1)
    for gname, sel in groups.items():
        if not sel.any():
            continue
        rows = {}
        for vname, fn in VARIANTS.items():
            emb = raw.copy()
            if fn is not None:
                emb[sel] = engine.embedder.embed([fn(c) for c, s in zip(f["crops"], sel) if s])
            scores = (emb @ emb.T)[iu]
            touches = (sel[iu[0]] | sel[iu[1]])
            g, i = genuine[iu], impostor[iu]
            rows[vname] = {"genuine_min": round(float(scores[g & touches].min()), 3) if (g & touches).any() else None,
                           "genuine_mean": round(float(scores[g & touches].mean()), 3) if (g & touches).any() else None,
                           "impostor_max": round(float(scores[i & touches].max()), 3),
                           "impostor_max_all": round(float(scores[i].max()), 3)}
        out[gname] = rows
        # what a template enrolled before the normalisation is worth: the same face, raw against gamma
        new = raw.copy()
        new[sel] = engine.embedder.embed([gamma(c) for c, s in zip(f["crops"], sel) if s])
        same = np.sum(raw[sel] * new[sel], axis=1)
        out[gname + "_raw_vs_gamma_cosine"] = {"min": round(float(same.min()), 3), "mean": round(float(same.mean()), 3)}
        # an old template (raw) of a group face against probes embedded the new way (gamma on the group)
        mixed = raw[sel] @ new.T
        g, i = genuine[sel], impostor[sel]
        out[gname + "_old_template_vs_new_probe"] = {
            "genuine_min": round(float(mixed[g].min()), 3) if g.any() else None,
            "genuine_mean": round(float(mixed[g].mean()), 3) if g.any() else None,
            "impostor_max": round(float(mixed[i].max()), 3)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shared_option(ap)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    data = Path(args.shared) / "data"
    nuaa, lfw = data / "nuaa" / "live", data / "lfw-dev"
    if not nuaa.is_dir() or not lfw.is_dir():
        print(f"evaluation data not found under {data}", file=sys.stderr)
        return 2
    engine = load_engine()
    report = {"command": "python -m benchmarks.exposure_normalisation " + " ".join(argv or sys.argv[1:])}

    paths = sorted(nuaa.glob("*/*.jpg"))
    f = faces(engine, paths)
    kept = [paths[i].stem.split("_") for i in f["index"]]
    subject = np.array([k[0] for k in kept])
    session = np.array(["_".join(k[:4]) for k in kept])
    report["nuaa_dev"] = measure(engine, f, (subject[:, None] == subject) & (session[:, None] != session),
                                 subject[:, None] != subject)

    pairset = read_pairs(lfw / "pairs.txt")
    names = pairset.images
    f = faces(engine, [lfw / "images" / n for n in names])
    kept = [names[i] for i in f["index"]]
    ident = np.array([n.split("/")[0] for n in kept])
    pos = {n: k for k, n in enumerate(kept)}
    genuine = np.zeros((len(kept), len(kept)), bool)
    for p in pairset.pairs:
        if p.same and p.a in pos and p.b in pos:
            genuine[pos[p.a], pos[p.b]] = genuine[pos[p.b], pos[p.a]] = True
    report["lfw_dev"] = measure(engine, f, genuine, ident[:, None] != ident)

    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for name in ("nuaa_dev", "lfw_dev"):
        r = report[name]
        print(f"{name}: {r['faces']} faces, groups {r['group_sizes']}")
        for group in ("over", "dark"):
            for variant, row in r.get(group, {}).items():
                print(f"  {group:4s} {variant:18s} {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
