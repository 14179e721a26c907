"""SFace (OpenCV zoo, Apache-2.0; in the default pack as ``sface``) as a second opinion on 1:N shortlists.

    python -m benchmarks.fast_detector embed            # first: fr_feature embeddings + landmarks (cached)
    python -m benchmarks.sface_second_opinion embed     # SFace on the same aligned faces (~6 min)
    python -m benchmarks.sface_second_opinion eval      # 1:1 and 1:N figures -> benchmarks/results/sface_second_opinion.json

What is compared, on lfw-dev (6,922 photos, 3,554 people), fast-path landmarks, aligned as the
engine aligns (``align_face``), SFace on RGB 0..255 (``ArcFaceStyleEmbedder(mean 0, std 1, RGB)``):

* **1:1**: fr_feature alone, SFace alone, and the mean of both cosines ("fused"): TAR at FMR 1e-4 /
  1e-5 over all genuine pairs against every cross-identity pair (each its own thresholds).
* **1:N, two-stage**: the gallery ranks subjects by fr_feature (the index's shortlist: the top
  ``K`` = 28 templates, ``Gallery._rank_subjects`` for top_k 5), then the shortlist is rescored with
  the fused score and decided on it. Against fr_feature alone at the same TPIR.
  - **measured**: every person of lfw-dev with two or more photos (826) enrolled with their first
    photo; mated searches: their other photos; non-mated searches: one photo of each person not
    enrolled. FPIR = non-mated searches whose best candidate reaches the threshold; TPIR = mated
    searches whose best candidate is the mate and reaches it (the margin rule is left out of
    both); the fused threshold is the one with fr_feature's TPIR on these searches.
  - **10k and 1M (simulated)**: the per-comparison impostor rates are the pooled rates of all
    23.9 M cross-identity pairs of lfw-dev, comparisons taken as independent:
    FPIR(N) = 1 - (1 - q)^N with q = P(impostor in the shortlist and its score >= t), the
    shortlist being the impostors whose fr_feature score passes the level K/N of the pooled rate;
    TPIR(N) = mean over mated pairs of [mate in the shortlist and >= t] x (1 - q(mate's score))^(N-1).
    Rates below 1/23.9 M are beyond the data and flagged. The pooled tail above FMR ~1e-6 is
    mostly lfw-dev's label noise (the same person under two names, near-duplicate photos), which
    no second model removes.
  - reference points: fr_feature at its own thresholds for pooled FMR 1e-5 and 1e-6 (TPIR_fr(N));
    the fused threshold with the same TPIR at that N; FPIR of both.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks._common import REPO, add_shared_option
from facegate.config import Settings
from facegate.models.alignment import align_face
from facegate.models.arcface import ArcFaceStyleEmbedder
from facegate.models.onnx import create_session
from facegate.models.pack import load_pack

RESULTS = REPO / "benchmarks" / "results" / "sface_second_opinion.json"
SHORTLIST = 28
SEED = 20261202


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def phase_embed(args) -> None:
    out = args.cache / "emb_lfw_sface.npz"
    if out.exists():
        return
    z = np.load(args.fd_cache / "emb_lfw_fast.npz")
    cv2.setNumThreads(1)
    settings = Settings.load(intra_op_threads=1)
    pack = load_pack(settings.model_dir, settings.pack)
    sface = ArcFaceStyleEmbedder(create_session(pack.verified_path("sface"), settings.providers, 1),
                                 mean=0.0, std=1.0, swap_rb=True)
    root = Path(args.shared) / "data" / "lfw-dev" / "images"
    names, lms, found = z["names"].tolist(), z["lms"], z["found"]
    emb = np.zeros((len(names), sface.dim), np.float32)
    t0, spent = time.time(), 0.0
    for i, n in enumerate(names):
        if found[i]:
            crop = align_face(cv2.imread(str(root / n)), lms[i])
            t = time.perf_counter()
            emb[i] = sface.embed([crop])[0]
            spent += time.perf_counter() - t
        if (i + 1) % 1000 == 0:
            log(f"sface {i + 1}/{len(names)} {time.time() - t0:.0f}s")
    np.savez(out, emb=emb, names=np.array(names), ms_per_face=1000 * spent / max(int(found.sum()), 1))
    log(f"sface: {len(names)} in {time.time() - t0:.0f}s, {1000 * spent / found.sum():.1f} ms per face (1 thread)")


# ----------------------------------------------------------------------------- pooled impostors
def pooled(fr: np.ndarray, sf: np.ndarray, ids: np.ndarray, floor: float = 0.15):
    """Every cross-identity pair (upper triangle) with fr >= floor or fused >= floor: (fr, fused)
    arrays, and the number of pairs in all (the rest score lower in both)."""
    keep_fr, keep_fu, n = [], [], 0
    for i in range(0, len(fr), 512):
        rows = np.arange(i, min(i + 512, len(fr)))
        a = fr[rows] @ fr.T
        b = (a + sf[rows] @ sf.T) / 2
        mask = (np.arange(len(fr))[None, :] > rows[:, None]) & (ids[None, :] != ids[rows][:, None])
        n += int(mask.sum())
        sel = mask & ((a >= floor) | (b >= floor))
        keep_fr.append(a[sel])
        keep_fu.append(b[sel])
    return np.concatenate(keep_fr).astype(np.float64), np.concatenate(keep_fu).astype(np.float64), n


class Rates:
    """Pooled per-comparison impostor rates: P(fr >= t), and P(fr >= c and fused >= t)."""

    def __init__(self, fr: np.ndarray, fu: np.ndarray, n: int):
        self.n = n
        self.fr_sorted = np.sort(fr)
        order = np.argsort(fr)
        self.fr_by_fr, self.fu_by_fr = fr[order], fu[order]

    def fr(self, t) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, float))
        return (self.fr_sorted.size - np.searchsorted(self.fr_sorted, t, side="left")) / self.n

    def cut(self, level: float) -> float:
        """The fr score passed by a fraction ``level`` of impostor comparisons (shortlist cut)."""
        k = int(np.ceil(level * self.n))
        if k <= 0 or k > self.fr_sorted.size:
            return -1.0 if k > self.fr_sorted.size else float("inf")
        return float(self.fr_sorted[-k])

    def fused(self, c: float, t) -> np.ndarray:
        start = np.searchsorted(self.fr_by_fr, c, side="left")
        tail = np.sort(self.fu_by_fr[start:])
        t = np.atleast_1d(np.asarray(t, float))
        return (tail.size - np.searchsorted(tail, t, side="left")) / self.n


def simulate(rates: Rates, mate_fr: np.ndarray, mate_fu: np.ndarray, n: int, t_fr: float) -> dict:
    """fr-only at ``t_fr`` and the two-stage fused decision at the threshold with the same TPIR,
    for a gallery of ``n`` (module docstring)."""
    fpir_fr = 1 - (1 - rates.fr(t_fr)[0]) ** n
    tpir_fr = float(np.mean((mate_fr >= t_fr) * (1 - rates.fr(mate_fr)) ** (n - 1)))
    c = rates.cut(SHORTLIST / n) if n > SHORTLIST else -1.0
    inlist = mate_fr >= c
    q_mate = rates.fused(c, mate_fu)

    def tpir_fused(t):
        return float(np.mean(inlist * (mate_fu >= t) * (1 - q_mate) ** (n - 1)))

    lo, hi = 0.0, 1.0          # the fused threshold with TPIR closest to fr's (TPIR falls as t rises)
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tpir_fused(mid) >= tpir_fr else (lo, mid)
    t_fu = lo
    q = rates.fused(c, t_fu)[0]
    return {"gallery": n, "fr_threshold": round(t_fr, 5), "fr_tpir": round(tpir_fr, 5), "fr_fpir": float(fpir_fr),
            "fr_per_comparison_fmr": float(rates.fr(t_fr)[0]),
            "shortlist_cut_fr": round(c, 5), "fused_threshold": round(t_fu, 5), "fused_tpir": round(tpir_fused(t_fu), 5),
            "fused_fpir": float(1 - (1 - q) ** n), "fused_per_comparison_rate": float(q),
            "beyond_data": bool(q * rates.n < 1 or rates.fr(t_fr)[0] * rates.n < 1),
            "fpir_ratio_fr_over_fused": float(fpir_fr / (1 - (1 - q) ** n)) if q > 0 else None}


def measured_gallery(fr, sf, ids, names, gallery_ids, t_fr: float) -> dict:
    """The real gallery searched: fr-only at ``t_fr``; two-stage fused at the threshold that gives
    the same TPIR on these searches (bisection)."""
    first = {}
    for i, n in enumerate(names):
        first.setdefault(ids[i], i)
    gal = np.array([first[g] for g in gallery_ids])
    in_gal, gal_set = set(gallery_ids), set(gal.tolist())
    mated = np.array([i for i in range(len(names)) if ids[i] in in_gal and i not in gal_set])
    non_mated = np.array([first[p] for p in sorted(set(ids)) if p not in in_gal])
    tops = {}
    for kind, probes in (("mated", mated), ("non_mated", non_mated)):
        a = fr[probes] @ fr[gal].T
        b = (a + sf[probes] @ sf[gal].T) / 2
        short = np.argsort(-a, axis=1)[:, :SHORTLIST]
        fu_short = np.take_along_axis(b, short, 1)
        tops[kind] = (a.argmax(1), a.max(1), short[np.arange(len(probes)), fu_short.argmax(1)], fu_short.max(1))
    mate = np.array([np.nonzero(ids[gal] == ids[p])[0][0] for p in mated])
    fr_top, fr_s, fu_top, fu_s = tops["mated"]
    tpir_fr = float(((fr_top == mate) & (fr_s >= t_fr)).mean())
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ((fu_top == mate) & (fu_s >= mid)).mean() >= tpir_fr else (lo, mid)
    t_fu = lo
    _, nfr_s, _, nfu_s = tops["non_mated"]
    return {"fr_threshold": round(t_fr, 5), "fused_threshold": round(t_fu, 5),
            "searches_mated": int(len(mated)), "searches_non_mated": int(len(non_mated)),
            "fr_tpir": round(tpir_fr, 5), "fused_tpir": round(float(((fu_top == mate) & (fu_s >= t_fu)).mean()), 5),
            "fr_fpir": round(float((nfr_s >= t_fr).mean()), 5), "fused_fpir": round(float((nfu_s >= t_fu).mean()), 5),
            "fr_false_positives": int((nfr_s >= t_fr).sum()), "fused_false_positives": int((nfu_s >= t_fu).sum())}


def threshold_at(sorted_scores: np.ndarray, n: int, fmr: float) -> float:
    allowed = int(np.floor(fmr * n + 1e-9))
    return float(np.nextafter(sorted_scores[-(allowed + 1)], np.inf))


def phase_eval(args) -> None:
    zf = np.load(args.fd_cache / "emb_lfw_fast.npz")
    zs = np.load(args.cache / "emb_lfw_sface.npz")
    names = zf["names"].tolist()
    assert names == zs["names"].tolist()
    fr, sf, found = zf["emb"].astype(np.float32), zs["emb"].astype(np.float32), zf["found"]
    ids = np.array([n.split("/")[0] for n in names])
    res: dict = {"photos": len(names), "people": int(len(set(ids))), "sface_ms_per_face_1thread": float(zs["ms_per_face"]),
                 "shortlist": SHORTLIST}
    # 1:1 over all pairs
    gi, gj = [], []
    for p in np.unique(ids):
        m = np.nonzero(ids == p)[0]
        if len(m) > 1:
            i, j = np.triu_indices(len(m), 1)
            gi.append(m[i]); gj.append(m[j])
    gi, gj = np.concatenate(gi), np.concatenate(gj)
    log("pooled impostor pairs")
    pfr, pfu, n = pooled(fr, sf, ids)
    psf = 2 * pfu - pfr
    one = {}
    for name, g, imp in (("fr_feature", (fr[gi] * fr[gj]).sum(1), pfr),
                         ("sface", (sf[gi] * sf[gj]).sum(1), psf),
                         ("fused", ((fr[gi] * fr[gj]).sum(1) + (sf[gi] * sf[gj]).sum(1)) / 2, pfu)):
        s = np.sort(imp)
        one[name] = {f"tar@{f:g}": round(float((g >= threshold_at(s, n, f)).mean()), 5) for f in (1e-4, 1e-5, 1e-6)}
        one[name] |= {f"threshold@{f:g}": round(threshold_at(s, n, f), 5) for f in (1e-4, 1e-5, 1e-6)}
    res["one_to_one"] = {"genuine_pairs": int(len(gi)), "impostor_pairs": n, **one}
    log(res["one_to_one"])
    rates = Rates(pfr, pfu, n)
    mate_pairs = (gi, gj)
    mate_fr = (fr[gi] * fr[gj]).sum(1).astype(np.float64)
    mate_fu = ((fr[gi] * fr[gj]).sum(1) + (sf[gi] * sf[gj]).sum(1)).astype(np.float64) / 2
    del mate_pairs
    sorted_fr = np.sort(pfr)
    sims = []
    for ref in (1e-5, 1e-6):
        t_fr = threshold_at(sorted_fr, n, ref)
        for size in (1_000, 10_000, 1_000_000):
            row = simulate(rates, mate_fr, mate_fu, size, t_fr) | {"reference_fmr": ref}
            sims.append(row)
            log(row)
    res["simulated"] = sims
    # measured 1k
    multi = sorted(p for p in set(ids) if (ids == p).sum() >= 2)
    rng = np.random.default_rng(SEED)
    gallery_ids = sorted(rng.choice(multi, min(1000, len(multi)), replace=False).tolist())
    sims = [r for r in sims]
    measured = []
    for ref in (1e-5, 1e-6):
        measured.append({"reference_fmr": ref,
                         **measured_gallery(fr, sf, ids, names, gallery_ids, threshold_at(sorted_fr, n, ref))})
        log(measured[-1])
    res["measured"] = {"people_with_2_or_more_photos": len(multi), "gallery": len(gallery_ids), "rows": measured}
    RESULTS.write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **res}, indent=1) + "\n")
    log(f"written {RESULTS}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phases", nargs="+", choices=("embed", "eval"))
    add_shared_option(ap)
    ap.add_argument("--cache-dir", default="/tmp/facegate-bench/sface")
    ap.add_argument("--fast-detector-cache", default="/tmp/facegate-bench/fast_detector")
    args = ap.parse_args(argv)
    args.cache = Path(args.cache_dir)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.fd_cache = Path(args.fast_detector_cache)
    for p in args.phases:
        {"embed": phase_embed, "eval": phase_eval}[p](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
