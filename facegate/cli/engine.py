"""Engine commands: ``embed``, ``compare``, ``eval``, ``calibrate``."""
from __future__ import annotations

import json
import shlex
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

    p = sub.add_parser("eval", help="verification accuracy on labelled pairs (--operational: the service's decisions)")
    p.add_argument("--pairs", required=True, help="LFW pairs.txt or a CSV (deepface master.csv, or file_x,file_y,"
                   "Decision[,identity_x,identity_y])")
    p.add_argument("--images", required=True, help="folder the pair file's paths are relative to")
    p.add_argument("--cache", help="reuse/save embeddings in this .npz file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--operational", action="store_true",
                   help="decide each pair as POST /v1/verify would (first photo enrolled, second the probe; "
                        "quality gate, review band): FTA, FMR/FNMR, review rate, GFAR/GFRR")
    p.add_argument("--captures", action="store_true",
                   help="with --operational: the pair file names capture folders (consecutive frames of one attempt) "
                        "under --images; the enrolment is a capture's best frame, the probe its fused frames "
                        "(facegate.evaluation.captures): FTA, FMR/FNMR and review per capture pair")
    p.add_argument("--plot", metavar="FILE.png", help="write the DET curve and the score histograms (needs the "
                   "eval extra: matplotlib)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="thresholds at target false-match rates, from one or more labelled sets")
    p.add_argument("--pairs", required=True, action="append",
                   help="a pair file (repeat with --images for several sets: the stricter threshold per target wins)")
    p.add_argument("--images", required=True, action="append", help="its images folder (one per --pairs)")
    p.add_argument("--cache", action="append", help="embeddings cache per set (.npz; one per --pairs)")
    p.add_argument("--population", help="name of the population the sets stand for; the table is written as "
                   "calibration-<population>.json in the pack (FACEGATE_POPULATION selects it)")
    p.add_argument("--quality-split", type=float, metavar="Q",
                   help="also calibrate probes of quality under Q apart (a stricter table for them)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="where to write the table (default: calibration[-<population>].json in the pack)")
    p.set_defaults(func=cmd_calibrate)


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


def _detector_id(engine) -> str:
    """What made the embeddings besides the pack: the detector (a cache from another is stale)."""
    return type(engine.detector).__name__


def _command() -> str:
    return "facegate " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _embeddings(engine, pairset, images: str, cache: str | None, quality: dict | None = None) -> dict:
    """name -> embedding or error code (``embed_images``), cached in ``cache``; ``quality`` is
    filled with name -> face quality score."""
    from facegate.evaluation.accuracy import embed_images

    names = pairset.images
    if cache and Path(cache).exists():
        data = np.load(cache, allow_pickle=False)
        if (str(data["pack_id"]) == engine.pack_id and "detector" in data.files
                and str(data["detector"]) == _detector_id(engine) and set(data["names"].tolist()) >= set(names)):
            emb = {}
            for n, e, err, q in zip(data["names"].tolist(), data["emb"], data["err"].tolist(), data["quality"]):
                emb[n] = err if err else e
                if quality is not None and not err:
                    quality[n] = float(q)
            return {n: emb[n] for n in names}
    t0 = time.time()
    quality = {} if quality is None else quality
    emb = embed_images(engine, Path(images), names, progress=True, quality=quality)
    print(f"embedded {len(names)} photos in {time.time() - t0:.0f}s", file=sys.stderr)
    if cache:
        dim = engine.embedder.dim
        np.savez(cache, pack_id=engine.pack_id, detector=_detector_id(engine), names=np.array(names),
                 emb=np.stack([e if isinstance(e, np.ndarray) else np.zeros(dim, np.float32) for e in emb.values()]),
                 err=np.array(["" if isinstance(e, np.ndarray) else e for e in emb.values()]),
                 quality=np.array([quality.get(n, np.nan) for n in emb], dtype=np.float64))
    return emb


def _samples(engine, pairset, images: str, cache: str | None) -> dict:
    """(name, role) -> operational ``Sample`` (``acquire_images``), cached in ``cache``."""
    from facegate.evaluation.operational import Sample, acquire_images

    st = engine.settings      # the gates the samples went through
    key = (f"operational:{engine.pack_id}:{_detector_id(engine)}:{st.min_face_px}:{st.min_enrol_face_px}:"
           f"{st.min_verify_face_px}")
    wanted = {(p.a, "enrol") for p in pairset.pairs} | {(p.b, "probe") for p in pairset.pairs}
    if cache and Path(cache).exists():
        data = np.load(cache, allow_pickle=False)
        if str(data["key"]) == key:
            got = {(n, r): Sample(None if err else e, None if err else float(q), err or None)
                   for n, r, e, q, err in zip(data["names"].tolist(), data["roles"].tolist(), data["emb"],
                                              data["quality"], data["err"].tolist())}
            if set(got) >= wanted:
                return got
    t0 = time.time()
    samples = acquire_images(engine, Path(images), pairset, progress=True)
    print(f"acquired {len(samples)} photo roles in {time.time() - t0:.0f}s", file=sys.stderr)
    if cache:
        dim = engine.embedder.dim
        items = sorted(samples.items())
        np.savez(cache, key=key, names=np.array([n for (n, _), _ in items]), roles=np.array([r for (_, r), _ in items]),
                 emb=np.stack([s.embedding if s.acquired else np.zeros(dim, np.float32) for _, s in items]),
                 quality=np.array([s.quality if s.acquired else np.nan for _, s in items]),
                 err=np.array([s.error or "" for _, s in items]))
    return samples


def _plot(engine, path: str, genuine, impostor, title: str, quality: float | None = None) -> dict:
    from facegate.evaluation.plots import plot_data, write_plot
    from facegate.matching.decisions import threshold

    point = threshold(engine.operating_points, engine.settings.target_fmr, quality)
    data = plot_data(genuine, impostor, engine.operating_points.points,
                     {"threshold": point.threshold, "fmr": point.fmr}, title)
    write_plot(path, data)
    return {"file": path, "genuine": data["genuine"], "impostor": data["impostor"], "points": data["points"]}


def cmd_eval(args) -> int:
    from facegate.evaluation.pairs import read_pairs

    engine = _engine()
    pairset = read_pairs(args.pairs)
    title = (f"{Path(args.pairs).parent.name}/{Path(args.pairs).name} "
             f"({engine.operating_points.source if engine.operating_points else 'uncalibrated'})")
    if args.captures and not args.operational:
        raise FacegateError("invalid_request", "--captures needs --operational")
    if args.operational:
        from facegate.evaluation.operational import decide_pairs

        if args.captures:
            from facegate.evaluation.captures import acquire_captures, decide_captures

            samples, infos = acquire_captures(engine, Path(args.images), pairset)
            result = decide_captures(engine, pairset, samples, infos)
        else:
            samples = _samples(engine, pairset, args.images, args.cache)
            result = decide_pairs(engine, pairset, samples)
        result["command"] = _command()
        if args.plot:
            from facegate.matching.scores import similarity
            scored = [(p.same, similarity(samples[(p.a, "enrol")].embedding, samples[(p.b, "probe")].embedding))
                      for p in pairset.pairs if samples[(p.a, "enrol")].acquired and samples[(p.b, "probe")].acquired]
            result["plot"] = _plot(engine, args.plot, [s for same, s in scored if same],
                                   [s for same, s in scored if not same], "operational, acquired pairs: " + title)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['pairs']} pairs, {result['acquired_pairs']} acquired (FTA {result['fta_rate']:.4f}) at "
                  f"threshold {result['threshold']} ({result['operating_point']['table']}, FMR {result['operating_point']['fmr']:g})")
            print(f"false matches {result['false_matches']} (FMR {result['fmr']}), false non-matches "
                  f"{result['false_non_matches']} (FNMR {result['fnmr']}), manual reviews {result['manual_reviews']} "
                  f"(rate {result['review_rate']}); GFAR {result['gfar']}, GFRR {result['gfrr']}")
        return 0

    from facegate.evaluation.accuracy import evaluate, score_sets

    emb = _embeddings(engine, pairset, args.images, args.cache)
    result = evaluate(engine, pairset, emb)
    if args.plot:
        genuine, impostor, _ = score_sets(pairset, emb)
        result["plot"] = _plot(engine, args.plot, genuine, impostor, title)
    if args.json:
        print(json.dumps(result))
    else:
        if result.get("cv_note"):
            print(f"note: {result['cv_note']}")
        print(f"accuracy {result['accuracy']:.4f} +- {result['accuracy_std']:.4f}  AUC {result['auc']:.5f}  "
              f"TAR@FAR1e-3 {result['tar_at_far']['0.001']}  TAR@FAR1e-4 {result['tar_at_far']['0.0001']}")
        print(f"at the default threshold {result['default_threshold']} (FMR {result['default_fmr']:g}): "
              f"{result['errors_at_default_threshold']} errors ({result['false_matches_at_default_threshold']} "
              f"false matches, {result['false_non_matches_at_default_threshold']} false non-matches); "
              f"{result['failures']} photos without a usable face")
    return 0


def cmd_calibrate(args) -> int:
    from facegate.evaluation.accuracy import calibrate_sets
    from facegate.evaluation.pairs import read_pairs

    if len(args.pairs) != len(args.images):
        raise FacegateError("invalid_request", "give one --images folder per --pairs file")
    caches = args.cache or []
    if caches and len(caches) != len(args.pairs):
        raise FacegateError("invalid_request", "give one --cache file per --pairs file (or none)")
    engine = _engine()
    sets = []
    for k, (pairs, images) in enumerate(zip(args.pairs, args.images)):
        pairset = read_pairs(pairs)
        quality: dict = {}
        emb = _embeddings(engine, pairset, images, caches[k] if caches else None, quality)
        sets.append((Path(pairs).name if Path(pairs).name not in [s[0] for s in sets] else pairs, pairset, emb, quality))
    table = calibrate_sets(sets, quality_split=args.quality_split)
    upstream = engine.pack.entry("fr_feature")["source"]["upstream_sha256"] if engine.pack.has("fr_feature") else None
    table = {"pack": engine.pack.manifest.get("pack"), "pack_id": engine.pack_id,
             "embedder_upstream_sha256": upstream, "detector": _detector_id(engine),
             **({"population": args.population} if args.population else {}),
             "made_with": _command(), **table}
    suffix = f"-{args.population}" if args.population else ""
    out = Path(args.out) if args.out else engine.pack.path / f"calibration{suffix}.json"
    out.write_text(json.dumps(table, indent=2) + "\n")
    if args.json:
        print(json.dumps(table))
    else:
        print(f"{table['impostor_pairs']} impostor and {table['genuine_pairs']} genuine pairs ({table['impostor_source']})")
        for name, points in [("all probes", table["points"])] + [
                (f"probe quality {b['min_quality']:g}..{b['max_quality'] if b['max_quality'] is not None else ''}", b["points"])
                for b in table.get("quality_bands", [])]:
            print(f" {name}:")
            for p in points:
                print(f"  FMR {p['fmr']:<8g} threshold {p['threshold']:.4f}  FNMR {p['fnmr']:.4f}"
                      + (f"  (decided by {p['decided_by']})" if "decided_by" in p else "")
                      + ("" if p["reliable"] else "  (few impostor pairs: indicative only)"))
        print(f"written to {out}")
    return 0
