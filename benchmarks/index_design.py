"""The measurements behind the ``ivf_pq_refine`` index design (issue 3), on real embeddings and a
gallery fitted to them (the same fit as ``index_scale.py``):

1. **Span of the embeddings.** Energy kept by an uncentred projection of the real LFW dev
   embeddings onto their first k principal axes: how far 512-D templates can be projected
   without changing their inner products.
2. **Refinement codecs.** Inner-product error of compressed copies of gallery vectors against
   uncompressed queries (bytes per template vs error), for the second, rescoring stage.
3. **IVF cell coverage.** For mated queries (second photo of a planted person) and unmated ones
   (whose exact top-1 is the best impostor): what fraction of the gallery must be scanned, cell
   by cell in the query's order, before the exact top-1's cell is reached, with each template
   assigned to its nearest 1-4 cells ("spill"). Scanning cost is what limits latency.
4. **Coarse quantizer cost.** One query's top-``nprobe`` cells among ``nlist`` 192-D centroids:
   FAISS ``IndexFlatIP.search`` (what ``IndexIVF.search`` calls) against a numpy mat-vec +
   ``argpartition``, single query, so the fixed per-query cost of probing many cells is known.

    .venv/bin/python -m benchmarks.index_design --n 1000000 --nlist 2048
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks.index_scale import FittedGaussian, load_real


def span(cache: Path) -> dict:
    data = np.load(cache)
    x = data["emb"][data["err"] == ""].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    energy = np.linalg.svd(x, compute_uv=False) ** 2
    lost = 1 - np.cumsum(energy) / energy.sum()
    return {"photos": int(len(x)), "energy_lost_after_k_axes": {k: float(lost[k - 1]) for k in (64, 128, 144, 160, 176, 192, 256)}}


def codecs(fit: FittedGaussian, probes: np.ndarray, gallery_real: np.ndarray, seed: int) -> list[dict]:
    train = fit.sample(100_000, seed + 5)
    x = fit.sample(20_000, seed + 6)
    x[:len(gallery_real)] = gallery_real
    q = np.concatenate([probes, fit.sample(2_000, seed + 8)])
    out = []
    for spec in ["SQ4", "SQ6", "SQ8", "PCA128,SQ8", "PCA192,SQ8", "PCA256,SQ8"]:
        codec = faiss.index_factory(x.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        codec.train(train)
        codes = codec.sa_encode(x)
        err = (q @ (x - codec.sa_decode(codes)).T).ravel()
        out.append({"codec": spec, "bytes": int(codes.shape[1]), "ip_err_std": float(err.std()),
                    "ip_err_p99_abs": float(np.quantile(np.abs(err), 0.99))})
        print(json.dumps(out[-1]), flush=True)
    return out


def coverage(fit: FittedGaussian, plant_gallery: np.ndarray, plant_probes: np.ndarray, n: int, nlist: int,
             seed: int) -> list[dict]:
    P = len(plant_gallery)
    x = np.concatenate([plant_gallery] + [fit.sample(min(100_000, n - P - s), seed * 1000 + s)
                                          for s in range(0, n - P, 100_000)]).astype(np.float32)
    unmated = fit.sample(300, seed + 99)
    exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    _, top_planted = exact.search(plant_probes, 1)
    _, top_unmated = exact.search(unmated, 1)
    del exact
    km = faiss.Kmeans(x.shape[1], nlist, niter=10, spherical=True, seed=seed)
    km.train(fit.sample(min(50 * nlist, 400_000), seed + 7))
    quantizer = faiss.IndexFlatIP(x.shape[1])
    quantizer.add(km.centroids)
    _, cells = quantizer.search(x, 4)                 # each template's 4 nearest cells
    out = []
    for name, q, top in (("mated", plant_probes, top_planted[:, 0]), ("unmated", unmated, top_unmated[:, 0])):
        _, order = quantizer.search(q, nlist)         # the query's probe order
        rank_of = np.argsort(order, axis=1)
        for spill in (1, 2, 3, 4):
            sizes = np.bincount(cells[:, :spill].ravel(), minlength=nlist)
            first = np.take_along_axis(rank_of, cells[top, :spill], 1).min(1)
            scanned = np.cumsum(sizes[order], axis=1)[np.arange(len(q)), first] / n     # in gallery sizes
            out.append({"queries": name, "spill": spill, "probes_q90": float(np.quantile(first + 1, 0.9)),
                        "probes_q99": float(np.quantile(first + 1, 0.99)),
                        "scanned_q90": float(np.quantile(scanned, 0.9)), "scanned_q99": float(np.quantile(scanned, 0.99))})
            print(json.dumps(out[-1]), flush=True)
    return out


def quantizer_cost(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for nlist in (4096, 8192, 16384):
        centroids = rng.standard_normal((nlist, 192)).astype(np.float32)
        queries = rng.standard_normal((50, 192)).astype(np.float32)
        flat = faiss.IndexFlatIP(192)
        flat.add(centroids)
        for nprobe in (nlist // 8, nlist // 4):
            flat.search(queries[:1], nprobe)
            t = time.perf_counter()
            for q in queries:
                flat.search(q[None], nprobe)
            faiss_ms = (time.perf_counter() - t) / len(queries) * 1e3
            t = time.perf_counter()
            for q in queries:
                np.argpartition(-(centroids @ q), nprobe)[:nprobe]
            numpy_ms = (time.perf_counter() - t) / len(queries) * 1e3
            out.append({"nlist": nlist, "nprobe": nprobe, "faiss_ms": round(faiss_ms, 2), "numpy_ms": round(numpy_ms, 2)})
            print(json.dumps(out[-1]), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/fgwork/lfwdev.npz"))
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size for the coverage part")
    ap.add_argument("--nlist", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    one_per_person, plant_gallery, plant_probes, _ = load_real(args.cache)
    fit = FittedGaussian(one_per_person, 0.0)
    t = time.perf_counter()
    res = {"span": span(args.cache)}
    print(json.dumps(res["span"]), flush=True)
    res["codecs"] = codecs(fit, plant_probes, plant_gallery, args.seed)
    res["coverage"] = {"n": args.n, "nlist": args.nlist,
                       "rows": coverage(fit, plant_gallery, plant_probes, args.n, args.nlist, args.seed)}
    res["quantizer"] = quantizer_cost(args.seed)
    res["seconds"] = round(time.perf_counter() - t, 1)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
