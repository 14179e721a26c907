"""The fast detection path (YuNet box -> calibrated square box -> MTCNN's O-Net) against full MTCNN.

    python -m benchmarks.fast_detector trace     # MTCNN traced + YuNet proposals, lfw-dev and NUAA (~5 min)
    python -m benchmarks.fast_detector fit       # box calibration -> facegate/models/fast_path_calibration.json
    python -m benchmarks.fast_detector embed     # every lfw-dev photo and NUAA frame, both paths (~8 min)
    python -m benchmarks.fast_detector eval      # coverage, TAR, CV accuracy, mixed pairs, landmark error
    python -m benchmarks.fast_detector timing    # per-stage detection time, 1 thread, interleaved
    python -m benchmarks.fast_detector smallfaces  # 24/32/48-px faces on a 640x480 frame: found by each
    python -m benchmarks.fast_detector report    # Markdown of the last eval + timing

Everything runs through the product's modules: ``FaceEngine.detect`` (its downscaling and its 2x
retry for small photos) with either the pack's fast path or its plain MTCNN detector, and
``FaceEngine.faces(policy="central", min_face=20)``, the call ``facegate eval`` embeds LFW with.
onnxruntime on 1 thread (``--threads``), OpenCV on 1 thread. Caches (detections, landmarks and
embeddings, never images) go to ``--cache-dir``; results to benchmarks/results/fast_detector.json.

Protocol of ``eval`` (the research study's, /work/scratch/engine18/REPORT.md):
  * coverage: photos of lfw-dev with a face (6,922 photos of 3,554 people);
  * TAR @ FAR over **all** genuine pairs (every pair of photos of one person, 59,398) against
    every cross-identity pair of the photos (23.9 M) at each path's own thresholds
    (``threshold_at_fmr``); a photo without a face rejects its genuine pairs;
  * cross-validated accuracy on pairs.txt (one fold per LFW fold, ``kfold_accuracy``);
  * mixed pairs: MTCNN enrolment against a fast-path probe (both orders of every genuine pair),
    at MTCNN's threshold, FMR over every ordered cross-identity pair;
  * landmark error of the chosen (central) face against full MTCNN's, in px and % of the
    inter-eye distance, on lfw-dev and on the NUAA frames.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import REPO, add_shared_option, uptime
from facegate.config import Settings
from facegate.engine import DETECT_MAX_SIDE, SMALL_IMAGE_SIDE, FaceEngine
from facegate.evaluation.accuracy import kfold_accuracy
from facegate.evaluation.pairs import read_lfw_pairs
from facegate.matching.operating_points import threshold_at_fmr
from facegate.models import fast_path, mtcnn
from facegate.models.base import Detection
from facegate.models.mtcnn import WINDOW, MTCNNDetector, _crops, _nms, _regress, _square
from facegate.models.onnx import create_session
from facegate.models.pack import load_pack
from facegate.models.yunet import YuNet

SEED = 20261202
TRAIN_PHOTOS = 1500
LFW_MIN_FACE = 20          # facegate.evaluation.accuracy.embed_images
CALIBRATION = REPO / "facegate" / "models" / fast_path.CALIBRATION_FILE
RESULTS = REPO / "benchmarks" / "results" / "fast_detector.json"


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data
def lfw_photos(shared: Path) -> tuple[Path, list[str]]:
    root = shared / "data" / "lfw-dev" / "images"
    return root, sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))


def nuaa_frames(shared: Path) -> tuple[Path, list[str]]:
    root = shared / "data" / "nuaa" / "live"
    return root, sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))


def datasets(shared: Path) -> dict:
    return {"lfw": (*lfw_photos(shared), LFW_MIN_FACE), "nuaa": (*nuaa_frames(shared), Settings().min_face_px)}


def engine(threads: int) -> FaceEngine:
    cv2.setNumThreads(1)
    return FaceEngine.load(Settings.load(intra_op_threads=threads))


def central(boxes: np.ndarray, shape) -> int:
    if len(boxes) == 0:
        return -1
    cy, cx = shape[0] / 2, shape[1] / 2
    return int(np.argmin(np.hypot((boxes[:, 0] + boxes[:, 2]) / 2 - cx, (boxes[:, 1] + boxes[:, 3]) / 2 - cy)))


# ----------------------------------------------------------------------------- trace
class TracingMTCNN(MTCNNDetector):
    """MTCNN that also reports, for every final face, the square box it fed O-Net (checked
    against ``detect`` on the first photos)."""

    def trace(self, bgr: np.ndarray, min_face: int) -> dict:
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        b2 = self._stage2(rgb, self._stage1(rgb, max(int(min_face), WINDOW)))
        empty = {"box": np.zeros((0, 4)), "landmarks": np.zeros((0, 5, 2)), "onet_in": np.zeros((0, 4))}
        if len(b2) == 0:
            return empty
        b = np.fix(b2)
        reg, pts, prob = self.onet.run(None, {self._oin: _crops(rgb, b, 48)})
        keep = np.nonzero(prob[:, 1] > self.thresholds[2])[0]
        if keep.size == 0:
            return empty
        boxes = np.concatenate([b[keep, :4], prob[keep, 1:2]], axis=1)
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        lms = np.stack([pts[keep, 0:5] * w[:, None] + boxes[:, 0:1] - 1,
                        pts[keep, 5:10] * h[:, None] + boxes[:, 1:2] - 1], axis=2)
        fin = _regress(boxes, reg[keep])
        pick = _nms(fin[:, :4], fin[:, 4], 0.7, "min")
        order = pick[np.argsort(-fin[pick, 4], kind="stable")]
        return {"box": fin[order, :4].astype(np.float32).astype(np.float64),
                "landmarks": lms[order].astype(np.float32).astype(np.float64), "onet_in": b[keep][order, :4]}


def engine_trace(det: TracingMTCNN, bgr: np.ndarray, min_face: int) -> dict:
    """``FaceEngine.detect``'s scaling and 2x retry around the trace; boxes in the image's pixels."""
    h, w = bgr.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = bgr if scale == 1.0 else cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                interpolation=cv2.INTER_AREA)
    t = det.trace(small, max(WINDOW, int(min_face * scale)))
    if len(t["box"]) == 0 and max(h, w) <= SMALL_IMAGE_SIDE:
        t = det.trace(cv2.resize(bgr, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC), max(WINDOW, min_face))
        scale = 2.0
    return {k: v / scale for k, v in t.items()} if scale != 1.0 else t


def phase_trace(args) -> None:
    """Needs only the pack (not the calibration, which ``fit`` makes from this)."""
    cv2.setNumThreads(1)
    settings = Settings.load(intra_op_threads=args.threads)
    pack = load_pack(settings.model_dir, settings.pack)
    mt = mtcnn.load(pack, settings)
    plain = FaceEngine(pack, mt, None, settings, None)
    det = TracingMTCNN(mt.pnet, mt.rnet, mt.onet)
    yunet = YuNet(create_session(pack.verified_path("yunet"), settings.providers, settings.intra_op_threads),
                  score_threshold=fast_path.YUNET_SCORE, max_side=fast_path.YUNET_MAX_SIDE)
    for name, (root, files, min_face) in datasets(Path(args.shared)).items():
        out = args.cache / f"trace_{name}.pkl"
        if out.exists():
            continue
        rows, t0 = [], time.time()
        for i, f in enumerate(files):
            bgr = cv2.imread(str(root / f))
            tr = engine_trace(det, bgr, min_face)
            if i < 30:   # the tracing copy is the product's detector
                ref = plain.detect(bgr, min_face)
                assert len(ref) == len(tr["box"]) and all(
                    np.allclose(d.landmarks, l, atol=1e-3) for d, l in zip(ref, tr["landmarks"])), f
            boxes, scores, kps = yunet.raw(bgr)
            rows.append({**tr, "central": central(tr["box"], bgr.shape), "y_box": boxes, "y_kps": kps,
                         "y_score": scores})
            if (i + 1) % 1000 == 0:
                log(f"trace {name} {i + 1}/{len(files)} {time.time() - t0:.0f}s")
        out.write_bytes(pickle.dumps(rows))
        log(f"trace {name}: {sum(r['central'] >= 0 for r in rows)}/{len(files)} faces, {time.time() - t0:.0f}s")


def load_trace(cache: Path, name: str) -> list[dict]:
    return pickle.loads((cache / f"trace_{name}.pkl").read_bytes())


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def phase_fit(args) -> None:
    """Fit the calibration on a seeded subset of lfw-dev: YuNet's proposal best overlapping MTCNN's
    chosen face -> the box MTCNN fed O-Net for it. The rest of lfw-dev gives the held-out error."""
    rows = load_trace(args.cache, "lfw")
    idx, boxes, kps, targets = [], [], [], []
    for i, r in enumerate(rows):
        c = r["central"]
        if c < 0 or len(r["y_box"]) == 0:
            continue
        ious = [box_iou(b, r["box"][c]) for b in r["y_box"]]
        j = int(np.argmax(ious))
        if ious[j] > 0.3:
            idx.append(i)
            boxes.append(r["y_box"][j])
            kps.append(r["y_kps"][j])
            targets.append(r["onet_in"][c])
    idx, boxes, kps, targets = np.array(idx), np.stack(boxes), np.stack(kps), np.stack(targets)
    train = np.zeros(len(rows), bool)
    train[np.random.default_rng(SEED).choice(len(rows), TRAIN_PHOTOS, replace=False)] = True
    tr = train[idx]
    cal = fast_path.BoxCalibration.fit(boxes[tr], kps[tr], targets[tr], use_kps=True)
    pred, t = cal.apply(boxes[~tr], kps[~tr]), targets[~tr]
    err = np.abs(pred - t) / (t[:, 2] - t[:, 0])[:, None]
    plain = np.abs(_square(boxes[~tr]) - t) / (t[:, 2] - t[:, 0])[:, None]
    doc = {
        "what": "YuNet box + 5 points -> the square box MTCNN feeds O-Net (facegate.models.fast_path.BoxCalibration)",
        "made_with": "python -m benchmarks.fast_detector trace fit",
        "fitted_on": f"{int(tr.sum())} seeded lfw-dev photos (seed {SEED}); YuNet 2023mar at score >= "
                     f"{fast_path.YUNET_SCORE}, longer side <= {fast_path.YUNET_MAX_SIDE}; MTCNN min_face {LFW_MIN_FACE}",
        "heldout": {"photos": int((~tr).sum()), "mean_abs_err_frac_of_side": round(float(err.mean()), 4),
                    "p95_max_err_frac_of_side": round(float(np.percentile(err.max(1), 95)), 4),
                    "uncalibrated_square_box_mean_abs_err": round(float(plain.mean()), 4)},
        **cal.as_dict(),
    }
    CALIBRATION.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"calibration written to {CALIBRATION}: held-out {doc['heldout']}")


# ----------------------------------------------------------------------------- embed
def detectors(eng: FaceEngine) -> dict[str, FaceEngine]:
    fp = eng.detector
    assert isinstance(fp, fast_path.FastPathDetector), "the pack has no YuNet: run `facegate models build`"
    return {"fast": eng, "mtcnn": FaceEngine(eng.pack, fp.fallback, eng.embedder, eng.settings, eng.operating_points)}


def phase_embed(args) -> None:
    engines = detectors(engine(args.threads))
    for name, (root, files, min_face) in datasets(Path(args.shared)).items():
        for path_name, eng in engines.items():
            out = args.cache / f"emb_{name}_{path_name}.npz"
            if out.exists():
                continue
            emb = np.zeros((len(files), 512), np.float32)
            lms = np.full((len(files), 5, 2), np.nan)
            found = np.zeros(len(files), bool)
            fallback = np.zeros(len(files), bool)
            t0 = time.time()
            for i, f in enumerate(files):
                faces = eng.faces((root / f).read_bytes(), policy="central", min_face=min_face)
                fallback[i] = getattr(eng.detector, "last_used_fallback", False)
                if faces:
                    emb[i], lms[i], found[i] = faces[0].embedding, faces[0].landmarks, True
                if (i + 1) % 1000 == 0:
                    log(f"embed {name} {path_name} {i + 1}/{len(files)} {time.time() - t0:.0f}s")
            np.savez(out, emb=emb, lms=lms, found=found, fallback=fallback, names=np.array(files))
            log(f"embed {name} {path_name}: {found.sum()}/{len(files)} in {time.time() - t0:.0f}s")


# ----------------------------------------------------------------------------- eval
def top_impostors(ea: np.ndarray, eb: np.ndarray, ids: np.ndarray, k: int, symmetric: bool):
    """(the k highest cross-identity scores, how many cross-identity pairs there are): the upper
    triangle when ``symmetric`` (ea is eb), else every ordered pair."""
    best, n = np.empty(0, np.float32), 0
    for i in range(0, len(ea), 512):
        rows = np.arange(i, min(i + 512, len(ea)))
        s = ea[rows] @ eb.T
        mask = ids[None, :] != ids[rows][:, None]
        if symmetric:
            mask &= np.arange(len(eb))[None, :] > rows[:, None]
        v = s[mask]
        n += v.size
        best = np.concatenate([best, v if v.size <= k else np.partition(v, -k)[-k:]])
        if best.size > 4 * k:
            best = np.partition(best, -k)[-k:]
    return np.sort(best)[::-1][:k].astype(np.float64), n


def threshold_from_top(top_desc: np.ndarray, n: int, fmr: float) -> float:
    """``threshold_at_fmr`` from the highest scores only (the same rule)."""
    allowed = int(np.floor(fmr * n + 1e-9))
    return float(np.nextafter(top_desc[allowed], np.inf))


def count_at_least(ea, eb, ids, t: float) -> int:
    n = 0
    for i in range(0, len(ea), 512):
        rows = np.arange(i, min(i + 512, len(ea)))
        n += int(((ea[rows] @ eb.T >= t) & (ids[None, :] != ids[rows][:, None])).sum())
    return n


def genuine_pairs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for ident in np.unique(ids):
        m = np.nonzero(ids == ident)[0]
        if len(m) > 1:
            i, j = np.triu_indices(len(m), 1)
            a.append(m[i])
            b.append(m[j])
    return np.concatenate(a), np.concatenate(b)


def landmark_error(ref: np.ndarray, fast: np.ndarray) -> dict:
    """Mean point distance per photo of the chosen face; a photo where the two paths chose
    different faces (points more than one inter-eye distance apart) is counted, not averaged."""
    ok = ~np.isnan(ref).any((1, 2)) & ~np.isnan(fast).any((1, 2))
    d = np.linalg.norm(ref - fast, axis=2).mean(1)
    ied = np.linalg.norm(ref[:, 1] - ref[:, 0], axis=1)
    other = ok & (d > ied)
    ok &= ~other
    d, ied = d[ok], ied[ok]
    return {"photos": int(ok.sum()), "other_face_chosen": int(other.sum()),
            "mean_px": round(float(d.mean()), 3), "p95_px": round(float(np.percentile(d, 95)), 3),
            "max_px": round(float(d.max()), 2), "mean_pct_ied": round(float(100 * (d / ied).mean()), 2),
            "p95_pct_ied": round(float(100 * np.percentile(d / ied, 95)), 2)}


def phase_eval(args) -> None:
    shared = Path(args.shared)
    z = {p: np.load(args.cache / f"emb_lfw_{p}.npz") for p in ("mtcnn", "fast")}
    names = z["mtcnn"]["names"].tolist()
    ids = np.array([n.split("/")[0] for n in names])
    ga, gb = genuine_pairs(ids)
    pairset = read_lfw_pairs(shared / "data" / "lfw-dev" / "pairs.txt")
    pos = {n: i for i, n in enumerate(names)}
    pa = np.array([pos[p.a] for p in pairset.pairs])
    pb = np.array([pos[p.b] for p in pairset.pairs])
    same = np.array([p.same for p in pairset.pairs])
    fold = np.array([p.fold for p in pairset.pairs])
    res: dict = {"photos": len(names), "identities": int(len(np.unique(ids))), "genuine_pairs": int(len(ga))}
    k = None
    for p in ("mtcnn", "fast"):
        e, found = z[p]["emb"], z[p]["found"]
        if k is None:
            n_imp = sum(int((ids[i + 1:] != ids[i]).sum()) for i in range(len(ids)))
            k = int(1e-3 * n_imp) + 2
        top, n = top_impostors(e, e, ids, k, True)
        g = np.where(found[ga] & found[gb], (e[ga] * e[gb]).sum(1), -np.inf)
        ok = found[pa] & found[pb]
        acc, std, per_fold = kfold_accuracy(np.where(ok, (e[pa] * e[pb]).sum(1), np.nan), same, fold, ok)
        r = {"found": int(found.sum()), "fallbacks": int(z[p]["fallback"].sum()), "impostor_pairs": n,
             "cv_accuracy": round(acc, 5), "cv_accuracy_std": round(std, 5)}
        for fmr in (1e-3, 1e-4):
            t = threshold_from_top(top, n, fmr)
            r[f"threshold@{fmr:g}"] = round(t, 6)
            r[f"tar@{fmr:g}"] = round(float((g >= t).mean()), 5)
        res[p] = r
        log(p, r)
    # mixed: MTCNN enrolment, fast-path probe, at MTCNN's thresholds
    em, ef = z["mtcnn"]["emb"], z["fast"]["emb"]
    ok = z["mtcnn"]["found"] & z["fast"]["found"]
    g = np.concatenate([(em[ga] * ef[gb]).sum(1), (em[gb] * ef[ga]).sum(1)])
    gok = np.concatenate([ok[ga] & ok[gb]] * 2)
    mixed = {"genuine_ordered_pairs": int(g.size)}
    n_ordered = 2 * res["mtcnn"]["impostor_pairs"]
    for fmr in (1e-3, 1e-4):
        t = res["mtcnn"][f"threshold@{fmr:g}"]
        mixed[f"tar@{fmr:g}"] = round(float((gok & (g >= t)).mean()), 5)
        mixed[f"fmr_at_mtcnn_threshold@{fmr:g}"] = count_at_least(em, ef, ids, t) / n_ordered
    same_photo = (em[ok] * ef[ok]).sum(1)
    mixed["same_photo_cosine_mean"] = round(float(same_photo.mean()), 4)
    mixed["same_photo_cosine_p1"] = round(float(np.percentile(same_photo, 1)), 4)
    res["mixed"] = mixed
    log("mixed", mixed)
    res["landmarks_lfw"] = landmark_error(z["mtcnn"]["lms"], z["fast"]["lms"])
    zn = {p: np.load(args.cache / f"emb_nuaa_{p}.npz") for p in ("mtcnn", "fast")}
    res["landmarks_nuaa"] = landmark_error(zn["mtcnn"]["lms"], zn["fast"]["lms"])
    res["nuaa_found"] = {p: int(zn[p]["found"].sum()) for p in zn} | {"frames": int(len(zn["fast"]["found"]))}
    log("landmarks", res["landmarks_lfw"], res["landmarks_nuaa"])
    save("eval", res)


# ----------------------------------------------------------------------------- timing
class TimedMTCNN(MTCNNDetector):
    """MTCNN with a clock around each stage (``last_times``)."""

    def detect(self, bgr, min_face: int = 20) -> list[Detection]:
        c = time.perf_counter
        t0 = c()
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        t1 = c()
        b = self._stage1(rgb, max(int(min_face), WINDOW))
        t2 = c()
        b = self._stage2(rgb, b)
        t3 = c()
        b, lms = self._stage3(rgb, b)
        t4 = c()
        self.last_times = {"pre": t1 - t0, "pnet": t2 - t1, "rnet": t3 - t2, "onet": t4 - t3}
        dets = [Detection(box=x[:4].astype(np.float32), score=float(x[4]), landmarks=y.astype(np.float32))
                for x, y in zip(b, lms)]
        dets.sort(key=lambda d: -d.score)
        return dets


def phase_timing(args) -> None:
    eng = engine(args.threads)
    fp = eng.detector
    mt = TimedMTCNN(fp.fallback.pnet, fp.fallback.rnet, fp.fallback.onet)
    runners = {"mtcnn": FaceEngine(eng.pack, mt, eng.embedder, eng.settings, None), "fast": eng}
    shared = Path(args.shared)
    lroot, lfiles = lfw_photos(shared)
    rng = np.random.default_rng(SEED)
    sample = [lfiles[i] for i in sorted(rng.choice(len(lfiles), args.lfw_sample, replace=False))]
    nroot, nfiles = nuaa_frames(shared)
    sets = {"lfw_250x250": ([cv2.imread(str(lroot / f)) for f in sample], LFW_MIN_FACE),
            "nuaa_640x480": ([cv2.imread(str(nroot / f)) for f in nfiles], eng.settings.min_face_px)}
    res = {"uptime_before": uptime(), "threads": args.threads, "sets": {}}
    for sname, (imgs, min_face) in sets.items():
        for img in imgs[:5]:
            for r in runners.values():
                r.detect(img, min_face)
        rec = {k: {"total": [], "stages": {}, "fallbacks": 0, "fine_passes": 0} for k in runners}
        order = list(runners)
        for i, img in enumerate(imgs):
            for k in (order if i % 2 == 0 else order[::-1]):       # who goes first alternates
                r = runners[k]
                t0 = time.perf_counter()
                r.detect(img, min_face)
                rec[k]["total"].append(time.perf_counter() - t0)
                for sk, sv in r.detector.last_times.items():
                    rec[k]["stages"].setdefault(sk, []).append(sv)
                rec[k]["fallbacks"] += int(getattr(r.detector, "last_used_fallback", False))
                rec[k]["fine_passes"] += int(getattr(r.detector, "last_fine_pass", False))
        summary = {}
        for k, v in rec.items():
            tot = 1000 * np.array(v["total"])
            summary[k] = {"median_ms": round(float(np.median(tot)), 2), "p90_ms": round(float(np.percentile(tot, 90)), 2),
                          "mean_ms": round(float(tot.mean()), 2), "n": len(tot), "fallbacks": v["fallbacks"],
                          **({"fine_passes": v["fine_passes"]} if k == "fast" else {}),
                          "stages_median_ms": {s: round(1000 * float(np.median(x)), 2) for s, x in v["stages"].items()}}
        res["sets"][sname] = summary
        log(sname, {k: v["median_ms"] for k, v in summary.items()}, uptime())
    res["uptime_after"] = uptime()
    save("timing", res)


def phase_smallfaces(args) -> None:
    """200 seeded lfw-dev faces shrunk to a box 24 / 32 / 48 px wide on a grey 640x480 frame: faces
    found (at least one detection overlapping the pasted face) by MTCNN and the fast path, and how
    often the fast path needed its full-resolution YuNet pass or MTCNN."""
    eng = engine(args.threads)
    runners = detectors(eng)
    rows = load_trace(args.cache, "lfw")
    root, files = lfw_photos(Path(args.shared))
    rng = np.random.default_rng(SEED)
    pick = [i for i in rng.permutation(len(files)) if rows[i]["central"] >= 0][:200]
    res = {}
    for width in (24, 32, 48):
        found = {k: 0 for k in runners}
        fine = fallback = 0
        for j, i in enumerate(pick):
            img = cv2.imread(str(root / files[i]))
            box = rows[i]["box"][rows[i]["central"]]
            s = width / (box[2] - box[0])
            small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                               interpolation=cv2.INTER_AREA)
            canvas = np.full((480, 640, 3), 110, np.uint8)
            y0, x0 = 40 + (j * 37) % 300, 40 + (j * 53) % 450
            hh, ww = min(small.shape[0], 480 - y0), min(small.shape[1], 640 - x0)
            canvas[y0:y0 + hh, x0:x0 + ww] = small[:hh, :ww]
            target = np.array([box[0] * s + x0, box[1] * s + y0, box[2] * s + x0, box[3] * s + y0])
            for k, r in runners.items():
                dets = r.detect(canvas, eng.settings.min_face_px)
                found[k] += any(box_iou(d.box, target) > 0.3 for d in dets)
                if k == "fast":
                    fine += r.detector.last_fine_pass
                    fallback += r.detector.last_used_fallback
        res[str(width)] = {**found, "fast_fine_pass": fine, "fast_mtcnn_fallback": fallback, "faces": len(pick)}
        log(f"faces {width} px wide:", res[str(width)])
    save("smallfaces", res)


# ----------------------------------------------------------------------------- results
def save(key: str, value: dict) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **value}
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


def phase_report(args) -> None:
    data = json.loads(RESULTS.read_text())
    out = []
    if "timing" in data:
        t = data["timing"]
        out += [f"Detection time, {t['threads']} onnxruntime thread, interleaved ({t['at']}); "
                f"load before: `{t['uptime_before']}`, after: `{t['uptime_after']}`", ""]
        for sname, s in t["sets"].items():
            order = ("pre", "pnet", "rnet", "yunet", "yunet_nms", "onet", "mtcnn")
            stages = [k for k in order if any(k in v["stages_median_ms"] for v in s.values())]
            out += [f"**{sname}** ({s['fast']['n']} images; median ms)", "",
                    "| path | total (p90) | " + " | ".join(stages) + " | MTCNN fallbacks | YuNet full-resolution passes |",
                    "|---|---|" + "---|" * len(stages) + "---|---|"]
            for k, v in s.items():
                out.append(f"| {k} | **{v['median_ms']}** ({v['p90_ms']}) | "
                           + " | ".join(str(v["stages_median_ms"].get(x, "-")) for x in stages)
                           + f" | {v['fallbacks'] if k == 'fast' else '-'} | {v.get('fine_passes', '-')} |")
            out.append("")
    if "eval" in data:
        e = data["eval"]
        out += [f"lfw-dev: {e['photos']} photos, {e['identities']} people, {e['genuine_pairs']} genuine pairs ({e['at']})", "",
                "| path | faces found (fallbacks) | TAR@1e-4 | TAR@1e-3 | thresholds 1e-4 / 1e-3 | CV accuracy |",
                "|---|---|---|---|---|---|"]
        for k in ("mtcnn", "fast"):
            r = e[k]
            out.append(f"| {k} | {r['found']} ({r['fallbacks']}) | {r['tar@0.0001']} | {r['tar@0.001']} | "
                       f"{r['threshold@0.0001']} / {r['threshold@0.001']} | {100 * r['cv_accuracy']:.2f} % "
                       f"± {100 * r['cv_accuracy_std']:.2f} |")
        m = e["mixed"]
        out += ["", f"Mixed (MTCNN enrolment, fast probe; {m['genuine_ordered_pairs']} ordered genuine pairs, MTCNN's thresholds): "
                f"TAR@1e-4 {m['tar@0.0001']} at FMR {m['fmr_at_mtcnn_threshold@0.0001']:.3g}; TAR@1e-3 {m['tar@0.001']} at FMR "
                f"{m['fmr_at_mtcnn_threshold@0.001']:.3g}; same photo cosine mean {m['same_photo_cosine_mean']}, 1st percentile "
                f"{m['same_photo_cosine_p1']}.", "",
                f"Landmarks vs full MTCNN: lfw-dev {e['landmarks_lfw']}; NUAA {e['landmarks_nuaa']}; NUAA faces found {e['nuaa_found']}."]
    if "smallfaces" in data:
        out += ["", "Small faces on a 640x480 frame (200 lfw-dev faces, min_face 24): found by", "",
                "| face width | MTCNN | fast path | of which YuNet's full-resolution pass | MTCNN fallback |", "|---|---|---|---|---|"]
        for w, v in data["smallfaces"].items():
            if w != "at":
                out.append(f"| {w} px | {v['mtcnn']} | {v['fast']} | {v['fast_fine_pass']} | {v['fast_mtcnn_fallback']} |")
    print("\n".join(out))


PHASES = {"trace": phase_trace, "fit": phase_fit, "embed": phase_embed, "eval": phase_eval,
          "timing": phase_timing, "smallfaces": phase_smallfaces, "report": phase_report}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phases", nargs="+", choices=list(PHASES))
    add_shared_option(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lfw-sample", type=int, default=300)
    ap.add_argument("--cache-dir", default="/tmp/facegate-bench/fast_detector")
    args = ap.parse_args(argv)
    args.cache = Path(args.cache_dir)
    args.cache.mkdir(parents=True, exist_ok=True)
    for p in args.phases:
        PHASES[p](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
