"""Engine speed and a side-by-side against PyPI ``face_recognition`` (dlib), in one run.

    .venv/bin/python -m benchmarks.engine_speed --peer-python /work/scratch/peer-venv/bin/python

Measures, single process, onnxruntime on ``--threads`` cores:
  * start-up: import, ``FaceEngine.load`` and the first ``faces()`` call, in fresh processes;
  * per-stage medians (decode, detect, align, embed; ``engine.last_times``) and end to end per
    photo (file read + decode + detect + align + embed) on a seeded sample of LFW dev photos and
    on the 640x480 webcam frames of ``nuaa/live``;
  * batch embedding throughput (``engine.embedder.embed``, batches of 1/8/32 aligned crops);
  * the peer on the same photos, interleaved photo by photo with facegate (who goes first
    alternates), so machine load hits both alike and the ratio is fair on a shared machine;
  * verification accuracy of both on all LFW dev pairs (cross-validated, one fold per LFW fold,
    the threshold chosen on the other folds; photos without a face count as errors).

The peer runs in a subprocess under ``--peer-python`` (a separate venv: see
benchmarks/results/engine.md); without it the peer parts are skipped with a message.
Embeddings for the accuracy part are cached under ``--cache-dir`` (default /tmp) because the
peer needs ~10 minutes for the 3,811 dev photos; ``--no-cache`` recomputes them.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, add_shared_option, ms, uptime
from facegate.config import Settings
from facegate.engine import FaceEngine
from facegate.evaluation.accuracy import all_impostor_scores, embed_images, kfold_accuracy
from facegate.evaluation.pairs import read_lfw_pairs
from facegate.matching.operating_points import threshold_at_fmr

STAGES = ("decode", "detect", "align", "embed")
PEER_STAGES = ("decode", "detect", "encode")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the peer
class Peer:
    """The face_recognition worker subprocess (benchmarks/peer_face_recognition.py)."""

    def __init__(self, python: str):
        self.proc = subprocess.Popen([python, str(REPO / "benchmarks" / "peer_face_recognition.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = json.loads(self.proc.stdout.readline())
        self.version = hello.get("dlib")

    def run(self, path: Path, upsample: int = 1, fallback_box=None) -> dict:
        self.proc.stdin.write(json.dumps({"path": str(path), "upsample": upsample,
                                          "fallback_box": fallback_box}) + "\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        if "error" in out:
            raise RuntimeError(f"peer failed on {path}: {out['error']}")
        return out

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def find_peer(python: str | None) -> str | None:
    if not python:
        log("peer: no --peer-python given; skipping the face_recognition side-by-side")
        return None
    if not Path(python).exists():
        log(f"peer: {python} does not exist; skipping the face_recognition side-by-side "
            "(create it: see benchmarks/results/engine.md)")
        return None
    probe = subprocess.run([python, "-c", "import face_recognition, dlib"], capture_output=True, text=True)
    if probe.returncode != 0:
        log(f"peer: {python} cannot import face_recognition ({probe.stderr.strip().splitlines()[-1:]}); skipping")
        return None
    return python


# ----------------------------------------------------------------------------- facegate
def facegate_photo(engine: FaceEngine, path: Path, policy: str, min_face: int | None
                   ) -> tuple[float, float, dict, int]:
    """End-to-end seconds (read + decode + detect + align + embed), the process CPU seconds
    that took (all threads), stage times, faces found."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    data = path.read_bytes()
    faces = engine.faces(data, policy=policy, min_face=min_face)
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    st = engine.last_times
    return total, cpu, {s: getattr(st, s) for s in STAGES}, len(faces)


def startup_cost(threads: int, photo: Path, runs: int = 3) -> dict:
    """Import, load and first-call cost in fresh processes (median over ``runs``)."""
    code = f"""
import json, time
t0 = time.perf_counter()
from facegate.config import Settings
from facegate.engine import FaceEngine
t1 = time.perf_counter()
engine = FaceEngine.load(Settings.load(intra_op_threads={threads}))
t2 = time.perf_counter()
data = open({str(photo)!r}, "rb").read()
calls = []
for _ in range(6):
    t = time.perf_counter(); engine.faces(data, policy="central", min_face=20); calls.append(time.perf_counter() - t)
print(json.dumps({{"import": t1 - t0, "load": t2 - t1, "first_call": calls[0], "second_call": calls[1],
                  "warm_call": sorted(calls[2:])[len(calls[2:]) // 2]}}))
"""
    rows = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: round(statistics.median(r[k] for r in rows) * 1000, 1) for k in rows[0]} | {"runs": runs}


def side_by_side(engines: dict[str, FaceEngine], peer: Peer | None, photos: list[Path], policy: str,
                 min_face: int | None, upsample: int) -> dict:
    """Every engine and the peer on the same photos, interleaved photo by photo; the order of
    the runners rotates from photo to photo so that neither always runs first."""
    totals: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    stages: dict[str, dict[str, list[float]]] = {}
    found: dict[str, int] = {}

    def facegate_runner(name, engine):
        def run(p):
            total, cpu, st, n = facegate_photo(engine, p, policy, min_face)
            totals[name].append(total)
            cpus[name].append(cpu)
            for s in STAGES:
                stages[name][s].append(st[s])
            found[name] += n > 0
        return run

    def peer_runner(p):
        out = peer.run(p, upsample)
        totals["peer"].append(sum(out["times"].values()))
        cpus["peer"].append(out["cpu"])
        for s in PEER_STAGES:
            stages["peer"][s].append(out["times"][s])
        found["peer"] += out["faces"] > 0

    runners = [(name, facegate_runner(name, e)) for name, e in engines.items()]
    if peer:
        runners.append(("peer", peer_runner))
    for name, _ in runners:
        totals[name], cpus[name], found[name] = [], [], 0
        stages[name] = {s: [] for s in (PEER_STAGES if name == "peer" else STAGES)}
    for p in photos[:3]:  # warm every runner (first calls allocate) outside the timed loop
        for name, run in runners:
            run(p)
    for name, _ in runners:
        totals[name], cpus[name], found[name] = [], [], 0
        stages[name] = {s: [] for s in stages[name]}
    for i, p in enumerate(photos):
        for k in range(len(runners)):
            runners[(i + k) % len(runners)][1](p)

    result: dict = {"photos": len(photos)}
    for name, _ in runners:
        result[name] = {"end_to_end_ms": ms(totals[name]), "cpu_ms": ms(cpus[name]), "stages_ms": {s: ms(v) for s, v in stages[name].items()},
                        "photos_with_face": found[name], "total_s": round(sum(totals[name]), 2)}
    if peer:
        pr, pr_cpu = np.array(totals["peer"]), np.array(cpus["peer"])
        for name in engines:
            fg, fg_cpu = np.array(totals[name]), np.array(cpus[name])
            result[f"speedup_{name}"] = {
                "median": round(float(np.median(pr) / np.median(fg)), 2),      # peer median / facegate median
                "total": round(float(pr.sum() / fg.sum()), 2),
                "per_photo_median": round(float(np.median(pr / fg)), 2),     # robust to load drifting in the run
                # CPU time hardly depends on how busy the machine is (wall time does)
                "cpu_median": round(float(np.median(pr_cpu) / np.median(fg_cpu)), 2),
            }
    return result


def batch_throughput(engine, crops: list[np.ndarray], sizes=(1, 8, 32), rounds: int = 8) -> dict:
    """Embedding throughput at several batch sizes. Each round embeds the same 32 crops once per
    batch size, the sizes taking turns, so load changes on a shared machine hit all alike."""
    crops = (crops * (32 // max(len(crops), 1) + 1))[:32]
    for b in sizes:  # warm every batch shape once
        engine.embedder.embed(crops[:b])
    per_crop: dict[int, list[float]] = {b: [] for b in sizes}
    for r in range(rounds):
        for b in (sizes if r % 2 == 0 else sizes[::-1]):
            t = time.perf_counter()
            for i in range(0, 32, b):
                engine.embedder.embed(crops[i:i + b])
            per_crop[b].append((time.perf_counter() - t) / 32)
    return {str(b): {"ms_per_crop_median": round(float(np.median(v)) * 1000, 2),
                     "crops_per_s": round(1 / float(np.median(v)), 1), "rounds": rounds}
            for b, v in per_crop.items()}


# ----------------------------------------------------------------------------- accuracy
def peer_embeddings(peer: Peer, images: Path, names: list[str], cache: Path | None) -> dict:
    """name -> {"enc": 128 floats | None, "fallback": enc | None} for every photo (cached)."""
    done: dict = {}
    if cache and cache.exists():
        done = json.loads(cache.read_text())
    todo = [n for n in names if n not in done]
    if todo:
        log(f"peer: encoding {len(todo)} photos (cached in {cache})")
    t0 = time.perf_counter()
    for i, n in enumerate(todo):
        out = peer.run(images / n, 1)
        done[n] = {"enc": out["encoding"], "box": out["box"], "fallback": None}
        if cache and ((i + 1) % 200 == 0 or i + 1 == len(todo)):
            cache.write_text(json.dumps(done))
            log(f"  peer {i + 1}/{len(todo)} ({time.perf_counter() - t0:.0f} s)")
    # lenient variant: photos the peer's detector missed get the median detected box
    boxes = np.array([v["box"] for v in done.values() if v["box"]])
    med = [int(v) for v in np.median(boxes, axis=0)] if len(boxes) else None
    changed = False
    for n in names:
        if done[n]["enc"] is None and done[n]["fallback"] is None and med:
            done[n]["fallback"] = peer.run(images / n, 1, fallback_box=med)["encoding"]
            changed = True
    if cache and changed:
        cache.write_text(json.dumps(done))
    return done


def scores_for(pairset, vecs: dict, distance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(pairset.pairs)
    scores, ok = np.full(n, np.nan), np.zeros(n, dtype=bool)
    same = np.array([p.same for p in pairset.pairs])
    fold = np.array([p.fold for p in pairset.pairs])
    for i, p in enumerate(pairset.pairs):
        a, b = vecs.get(p.a), vecs.get(p.b)
        if a is not None and b is not None:
            scores[i] = -float(np.linalg.norm(a - b)) if distance else float(np.dot(a, b))
            ok[i] = True
    return scores, same, fold, ok


def tar_at_far(genuine: np.ndarray, n_genuine: int, impostor: np.ndarray, far: float) -> float:
    """Listed genuine pairs accepted at the threshold where the impostor FMR is ``far``
    (a genuine pair with a failed photo counts as rejected), as ``facegate eval``."""
    return round(float((genuine >= threshold_at_fmr(impostor, far)).sum() / n_genuine), 4)


def impostor_neg_distances(vecs: dict, identities: dict) -> np.ndarray:
    names = [n for n in sorted(identities) if vecs.get(n) is not None]
    m = np.stack([vecs[n] for n in names]).astype(np.float64)
    ids = np.array([identities[n] for n in names])
    sq = (m * m).sum(1)
    out = []
    for i in range(0, len(names), 1024):
        rows = np.arange(i, min(i + 1024, len(names)))
        d2 = sq[rows, None] + sq[None, :] - 2 * m[rows] @ m.T
        mask = (np.arange(len(names))[None, :] > rows[:, None]) & (ids[None, :] != ids[rows][:, None])
        out.append(-np.sqrt(np.maximum(d2[mask], 0)))
    return np.concatenate(out)


def accuracy_summary(pairset, vecs: dict, distance: bool) -> dict:
    scores, same, fold, ok = scores_for(pairset, vecs, distance)
    acc, std, _ = kfold_accuracy(scores, same, fold, ok)
    impostor = impostor_neg_distances(vecs, pairset.identities) if distance else \
        all_impostor_scores(vecs, pairset.identities)
    genuine = scores[same & ok]
    return {"accuracy": round(acc, 5), "accuracy_std": round(std, 5),
            "failed_photos": sum(1 for n in pairset.images if vecs.get(n) is None),
            "failed_pairs": int((~ok).sum()),
            "tar_at_far": {"0.001": tar_at_far(genuine, int(same.sum()), impostor, 1e-3),
                           "0.0001": tar_at_far(genuine, int(same.sum()), impostor, 1e-4)},
            "impostor_pairs_for_far": int(impostor.size)}


def accuracy(engine, peer: Peer | None, lfw: Path, cache_dir: Path | None) -> dict:
    pairset = read_lfw_pairs(lfw / "pairs.txt")
    names = pairset.images
    images = lfw / "images"
    detector = type(engine.detector).__name__      # the pack id does not change with the detector
    fg_cache = cache_dir / f"facegate-lfw-dev-{engine.pack_id}-{detector}.npz" if cache_dir else None
    if fg_cache and fg_cache.exists():
        z = np.load(fg_cache, allow_pickle=False)
        fg = {n: z[n] for n in z.files}
    else:
        log(f"facegate: embedding {len(names)} photos")
        raw = embed_images(engine, images, names, progress=True)
        fg = {n: v for n, v in raw.items() if isinstance(v, np.ndarray)}
        if fg_cache:
            np.savez(fg_cache, **fg)
    fg_vecs = {n: fg.get(n) for n in names}
    result = {"pairs": len(pairset.pairs), "photos": len(names),
              "protocol": "LFW: one fold per LFW fold, threshold chosen on the other folds; "
                          "pairs with a photo without a face count as errors",
              "facegate": accuracy_summary(pairset, fg_vecs, distance=False)}
    if peer:
        pc = peer_embeddings(peer, images, names, cache_dir / "peer-face_recognition-lfw-dev.json" if cache_dir else None)
        strict = {n: (np.array(pc[n]["enc"]) if pc[n]["enc"] else None) for n in names}
        lenient = {n: (strict[n] if strict[n] is not None else
                       (np.array(pc[n]["fallback"]) if pc[n]["fallback"] else None)) for n in names}
        result["peer"] = accuracy_summary(pairset, strict, distance=True)
        result["peer_with_fallback_box"] = accuracy_summary(pairset, lenient, distance=True)
        result["peer_with_fallback_box"]["note"] = ("photos the peer's detector missed are encoded at "
                                                    "the median detected box instead of counting as errors")
    return result


# ----------------------------------------------------------------------------- report
def markdown(r: dict) -> str:
    """The figures as Markdown tables (what benchmarks/results/engine.md quotes)."""
    lines = [f"Run {r['started']}, {r['cpus']} CPUs, onnxruntime {r['onnxruntime']} on {r['threads']} threads, "
             f"pack {r['pack_id']}; peer {'dlib ' + r['peer']['dlib'] if r.get('peer') else 'not run'}.",
             "", "uptime during the run:", ""] + [f"    {u}" for u in r["uptime"]]
    st = r["startup_ms"]
    lines += ["", f"Start-up (fresh process, median of {st['runs']}): import {st['import']} ms, "
              f"FaceEngine.load {st['load']} ms, first faces() {st['first_call']} ms, second {st['second_call']} ms, "
              f"warm {st['warm_call']} ms.", ""]
    for key, title in (("lfw", "LFW dev sample (250x250)"), ("nuaa_640x480", "NUAA live 640x480, default settings"),
                       ("nuaa_640x480_big_faces", "NUAA live 640x480, large-face settings")):
        if key not in r:
            continue
        x = r[key]
        lines += [f"**{title}**, {x['photos']} photos, interleaved. facegate: {x['settings']['facegate']}; "
                  f"peer: {x['settings']['peer']}.", "",
                  "| engine | end to end median (p90) ms | CPU ms median | decode | detect | align | embed/encode | photos with a face | speed-up vs peer: wall median / per-photo median / total; CPU median |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in [k for k in ("facegate", "facegate_1thread", "peer") if k in x]:
            e = x[name]
            sm = {k: v["median"] for k, v in e["stages_ms"].items()}
            sp = x.get(f"speedup_{name}")
            speed = (f"{sp['median']}x / {sp['per_photo_median']}x / {sp['total']}x; {sp['cpu_median']}x"
                     if sp else "-")
            lines.append(f"| {name} | {e['end_to_end_ms']['median']} ({e['end_to_end_ms']['p90']}) | "
                         f"{e['cpu_ms']['median']} | {sm['decode']} | "
                         f"{sm['detect']} | {sm.get('align', '-')} | {sm.get('embed', sm.get('encode'))} | "
                         f"{e['photos_with_face']}/{x['photos']} | {speed} |")
        lines.append("")
    if "batch_embedding" in r:
        lines += ["Batch embedding (`engine.embedder.embed`, aligned 112x112 crops):", "",
                  "| batch | ms per crop (median) | crops/s |", "|---|---|---|"]
        lines += [f"| {b} | {v['ms_per_crop_median']} | {v['crops_per_s']} |" for b, v in r["batch_embedding"].items()]
        lines.append("")
    if "lfw_accuracy" in r:
        a = r["lfw_accuracy"]
        lines += [f"Accuracy on all {a['pairs']} LFW dev pairs ({a['photos']} photos); {a['protocol']}.", "",
                  "| engine | accuracy (std) | TAR @ FAR 1e-3 | TAR @ FAR 1e-4 | photos without a face |", "|---|---|---|---|---|"]
        for name in [k for k in ("facegate", "peer", "peer_with_fallback_box") if k in a]:
            e = a[name]
            lines.append(f"| {name} | {e['accuracy'] * 100:.2f} % ({e['accuracy_std'] * 100:.2f}) | "
                         f"{e['tar_at_far']['0.001']} | {e['tar_at_far']['0.0001']} | {e['failed_photos']} |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shared_option(ap)
    ap.add_argument("--peer-python", default=os.environ.get("FACEGATE_PEER_PYTHON"),
                    help="python of a venv with face_recognition (skip the peer when absent)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--lfw-sample", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--cache-dir", default="/tmp/facegate-bench")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "engine_speed.json"))
    args = ap.parse_args(argv)

    shared = Path(args.shared)
    lfw = shared / "data" / "lfw-dev"
    nuaa = shared / "data" / "nuaa" / "live"
    if not lfw.is_dir() or not nuaa.is_dir():
        log(f"evaluation data not found under {shared}/data (lfw-dev, nuaa/live); nothing to measure")
        return 2
    cache_dir = None if args.no_cache else Path(args.cache_dir)
    if cache_dir:
        cache_dir.mkdir(parents=True, exist_ok=True)

    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "uptime": [uptime()], "cpus": os.cpu_count(), "threads": args.threads,
                    "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.engine_speed", *sys.argv[1:]])}
    import onnxruntime
    report["onnxruntime"] = onnxruntime.__version__

    lfw_all = sorted(str(p.relative_to(lfw / "images")) for p in (lfw / "images").glob("*/*.jpg"))
    sample = [lfw / "images" / n for n in random.Random(args.seed).sample(lfw_all, min(args.lfw_sample, len(lfw_all)))]
    frames = sorted((nuaa).glob("*/*.jpg"))

    log("start-up cost (fresh processes)")
    report["startup_ms"] = startup_cost(args.threads, sample[0])

    engine = FaceEngine.load(Settings.load(intra_op_threads=args.threads))
    engines = {"facegate": engine}
    if args.threads != 1:
        # the peer (dlib) computes on one core: facegate on one core too, for a per-core figure
        engines["facegate_1thread"] = FaceEngine.load(Settings.load(intra_op_threads=1))
    report["pack_id"] = engine.pack_id
    peer_python = find_peer(args.peer_python)
    peer = Peer(peer_python) if peer_python else None
    report["peer"] = {"package": "face_recognition 1.3.0 (dlib-bin, HOG detector, ResNet 128-D)",
                      "dlib": peer.version} if peer else None
    try:
        log(f"LFW: {len(sample)} photos, interleaved")
        report["lfw"] = side_by_side(engines, peer, sample, "central", 20, upsample=1)
        report["lfw"]["settings"] = {"facegate": f"policy central, min_face 20 (the settings of the accuracy run), {args.threads} threads; facegate_1thread: the same on 1 thread",
                                     "peer": "face_locations(upsample=1) (its default), face nearest the centre, face_encodings"}
        report["uptime"].append(uptime())

        log(f"NUAA live: {len(frames)} 640x480 frames, interleaved")
        report["nuaa_640x480"] = side_by_side(engines, peer, frames, "largest", None, upsample=1)
        report["nuaa_640x480"]["settings"] = {"facegate": f"policy largest, min_face {engine.settings.min_face_px} (default)",
                                              "peer": "face_locations(upsample=1) (its default)"}
        report["nuaa_640x480_big_faces"] = side_by_side(engines, peer, frames, "largest", 80, upsample=0)
        report["nuaa_640x480_big_faces"]["settings"] = {"facegate": "policy largest, min_face 80",
                                                        "peer": "face_locations(upsample=0) (finds faces >= ~80 px)"}
        report["uptime"].append(uptime())

        log("batch embedding throughput")
        crops = []
        for p in sample[:64]:
            crops += [f.aligned for f in engine.faces(p.read_bytes(), policy="central", min_face=20, embed=False)]
        report["batch_embedding"] = batch_throughput(engine, crops)
        report["uptime"].append(uptime())

        if not args.skip_accuracy:
            log("accuracy on all LFW dev pairs")
            report["lfw_accuracy"] = accuracy(engine, peer, lfw, cache_dir)
            report["uptime"].append(uptime())
    finally:
        if peer:
            peer.close()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    log(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
