"""Engine commands: ``embed``, ``compare``, ``eval``, ``calibrate``."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from facegate.errors import FacegateError


def register(sub) -> None:
    p = sub.add_parser("embed", help="embed the face in each image (one JSON line per image)")
    p.add_argument("images", nargs="+")
    p.add_argument("--json", action="store_true", help="JSON lines (the default output is a summary)")
    p.add_argument("--policy", default="largest", choices=("largest", "central", "single"))
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("compare", help="1:1 compare the faces in two images")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json", action="store_true")
    p.add_argument("--fmr", type=float, help="operating point (default: FACEGATE_TARGET_FMR)")
    p.set_defaults(func=cmd_compare)

    for name, fn, text in (("eval", cmd_eval, "verification accuracy on labelled pairs"),
                           ("calibrate", cmd_calibrate, "thresholds at target false-match rates")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--pairs", required=True, help="LFW pairs.txt or deepface master.csv")
        p.add_argument("--images", required=True, help="folder the pair file's paths are relative to")
        p.add_argument("--cache", help="reuse/save embeddings in this .npz file")
        p.add_argument("--json", action="store_true")
        if name == "calibrate":
            p.add_argument("--out", help="where to write the table (default: calibration.json in the pack)")
        p.set_defaults(func=fn)


def _engine():
    from facegate.engine import load_engine
    return load_engine()


def cmd_embed(args) -> int:
    engine = _engine()
    status = 0
    for path in args.images:
        try:
            face = engine.face(Path(path).read_bytes(), policy=args.policy)
            rec = {"path": path, "pack_id": engine.pack_id, **face.as_dict(with_embedding=True)}
        except FileNotFoundError:
            rec, status = {"path": path, "error": {"code": "not_found", "message": "no such file"}}, 2
        except FacegateError as exc:
            rec, status = {"path": path, "error": exc.to_dict()}, 2
        if args.json:
            print(json.dumps(rec), flush=True)
        elif "error" in rec:
            print(f"{path}: {rec['error']['code']}: {rec['error']['message']}")
        else:
            print(f"{path}: {len(rec['embedding'])}-D embedding, quality {rec['quality']['score']:.2f}")
    return status


def cmd_compare(args) -> int:
    engine = _engine()
    try:
        a, b = Path(args.a).read_bytes(), Path(args.b).read_bytes()
    except FileNotFoundError as exc:
        raise FacegateError("not_found", f"no such file: {exc.filename}")
    from facegate.matching.decisions import threshold
    from facegate.matching.scores import similarity
    fa, fb = engine.face(a, policy="largest"), engine.face(b, policy="largest")
    point = threshold(engine.operating_points, args.fmr or engine.settings.target_fmr)
    score = similarity(fa.embedding, fb.embedding)
    result = {"score": round(score, 6), "match": point.matches(score), "threshold": round(point.threshold, 6),
              "fmr": point.fmr}
    if args.json:
        print(json.dumps(result))
    else:
        verdict = "MATCH" if result["match"] else "no match"
        print(f"{verdict}: score {result['score']:.4f}, threshold {result['threshold']:.4f} (FMR {result['fmr']:g})")
    return 0


def _embeddings(engine, pairset, images: str, cache: str | None) -> dict:
    from facegate.evaluation.accuracy import embed_images

    names = pairset.images
    if cache and Path(cache).exists():
        data = np.load(cache, allow_pickle=False)
        if str(data["pack_id"]) == engine.pack_id and set(data["names"].tolist()) >= set(names):
            emb = {}
            for n, e, err in zip(data["names"].tolist(), data["emb"], data["err"].tolist()):
                emb[n] = err if err else e
            return {n: emb[n] for n in names}
    t0 = time.time()
    emb = embed_images(engine, Path(images), names, progress=True)
    print(f"embedded {len(names)} photos in {time.time() - t0:.0f}s", file=sys.stderr)
    if cache:
        dim = engine.embedder.dim
        np.savez(cache, pack_id=engine.pack_id, names=np.array(names),
                 emb=np.stack([e if isinstance(e, np.ndarray) else np.zeros(dim, np.float32) for e in emb.values()]),
                 err=np.array(["" if isinstance(e, np.ndarray) else e for e in emb.values()]))
    return emb


def cmd_eval(args) -> int:
    from facegate.evaluation.accuracy import evaluate
    from facegate.evaluation.pairs import read_pairs

    engine = _engine()
    pairset = read_pairs(args.pairs)
    result = evaluate(engine, pairset, _embeddings(engine, pairset, args.images, args.cache))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accuracy {result['accuracy']:.4f} +- {result['accuracy_std']:.4f}  AUC {result['auc']:.5f}  "
              f"TAR@FAR1e-3 {result['tar_at_far']['0.001']}  TAR@FAR1e-4 {result['tar_at_far']['0.0001']}")
        print(f"at the default threshold {result['default_threshold']} (FMR {result['default_fmr']:g}): "
              f"{result['errors_at_default_threshold']} errors ({result['false_matches_at_default_threshold']} "
              f"false matches, {result['false_non_matches_at_default_threshold']} false non-matches); "
              f"{result['failures']} photos without a usable face")
    return 0


def cmd_calibrate(args) -> int:
    from facegate.evaluation.accuracy import calibrate
    from facegate.evaluation.pairs import read_pairs

    engine = _engine()
    pairset = read_pairs(args.pairs)
    table = calibrate(pairset, _embeddings(engine, pairset, args.images, args.cache))
    upstream = engine.pack.entry("fr_feature")["source"]["upstream_sha256"] if engine.pack.has("fr_feature") else None
    table = {"pack": engine.pack.manifest.get("pack"), "pack_id": engine.pack_id,
             "embedder_upstream_sha256": upstream,
             "made_with": f"facegate calibrate --pairs {args.pairs} --images {args.images}", **table}
    out = Path(args.out) if args.out else engine.pack.path / "calibration.json"
    out.write_text(json.dumps(table, indent=2) + "\n")
    if args.json:
        print(json.dumps(table))
    else:
        print(f"{table['impostor_pairs']} impostor and {table['genuine_pairs']} genuine pairs ({table['impostor_source']})")
        for p in table["points"]:
            print(f"  FMR {p['fmr']:<8g} threshold {p['threshold']:.4f}  FNMR {p['fnmr']:.4f}"
                  + ("" if p["reliable"] else "  (few impostor pairs: indicative only)"))
        print(f"written to {out}")
    return 0
