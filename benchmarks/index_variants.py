"""Design experiments for ivf_pq_refine's candidate stage at 10M (issue 3): which code, rotation
and cell assignment put the exact top-1 into a short candidate list at the least scan cost.

Building a 10M IVF is dominated by assigning 10M vectors to 8,192 cells (~250 s on 2 cores),
so ``prepare`` does the expensive, shared part once and ``run`` builds one variant in about a
minute from it:

``prepare``
    The same gallery as ``index_scale.py`` (planted real identities first, then synthetic ones
    fitted to the real distribution, same seeds), trained the way ``VectorIndex.for_size``
    trains ``ivf_pq_refine`` for 10M; every vector is stored PCA-projected to 192 dims
    (float32 memmap, 7.7 GB), with its four nearest cells and the exact top-10 of every query
    (computed in the projected space, which keeps all but 7e-6 of the energy).
``run``
    Builds an IVF fast-scan variant over the stored projections (cells taken from the stored
    assignment, so ``--spill 2`` also stores each vector in its second-nearest cell), plus the
    8-bit refinement codes, and measures single-query latency (``ivf.search`` + rescoring) and
    how often the exact top-1 is the answer (``planted_r1``), is in the candidates
    (``*_incand``) or in the best 16 after rescoring (``*_in16``: what the gallery's exact
    rescoring turns into recall@1).
    Variants: ``--m`` sub-quantisers; ``--rot none|random|opq`` (a rotation before PQ; with
    ``--dims D`` < 192 only the first D PCA axes are kept, then rotated); ``--residual 1``
    (PQ of the residual to the cell centroid); ``--spill 2``; ``--implem`` FAISS fast-scan
    implementations; ``--bbs`` codes per fast-scan block.

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 .venv/bin/python -m benchmarks.index_variants prepare
    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.index_variants run --m 64 --rot random --dims 128 \\
        --sweep 1700:1000,1700:500
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks import index_scale as scale
from benchmarks._common import pct
from facegate.gallery.vectors import VectorIndex, set_threads

PROJECTED = 192


def prepare(args) -> None:
    out = args.workdir
    out.mkdir(parents=True, exist_ok=True)
    one_per_person, plant_gallery, plant_probes, _ = scale.load_real(args.cache)
    fit = scale.FittedGaussian(one_per_person, 0.0)
    seed = args.seed
    queries = np.concatenate([plant_probes, fit.sample(args.queries, seed + 999_983)]).astype(np.float32)
    index = VectorIndex.for_size(512, args.n)
    t0 = time.time()
    sample = fit.sample(index.params["train_size"], seed + 7)
    index.train(sample)
    print("trained", round(time.time() - t0, 1), index.params, flush=True)
    pca = faiss.downcast_VectorTransform(index._index.chain.at(0))
    assert pca.d_out == PROJECTED, "this experiment assumes the 192-dim projection of this pack"
    # the coarse quantiser is trained here in the projected space itself (as before the rotated
    # leading axes were introduced)
    ivf = faiss.index_factory(PROJECTED, f"IVF{index.params['nlist']},Flat", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(ivf).cp.niter = 10
    train_projected = pca.apply(sample)
    ivf.train(train_projected)
    faiss.write_index(faiss.downcast_index(ivf).quantizer, str(out / "quantizer.idx"))
    np.save(out / "train_proj.npy", train_projected)
    del sample
    quantizer = faiss.downcast_index(ivf).quantizer
    queries_projected = pca.apply(queries)
    np.save(out / "queries.npy", queries_projected)
    x_all = np.lib.format.open_memmap(out / "x.npy", "w+", np.float32, (args.n, PROJECTED))
    assign = np.lib.format.open_memmap(out / "assign.npy", "w+", np.int32, (args.n, 4))
    exact = scale.StreamingTopK(queries_projected, 10)
    planted = len(plant_gallery)
    x_all[:planted] = pca.apply(plant_gallery)
    offset = planted
    for c, start in enumerate(range(0, args.n - planted, scale.CHUNK)):
        m = min(scale.CHUNK, args.n - planted - start)
        x_all[offset:offset + m] = pca.apply(fit.sample(m, seed * 1_000_003 + c))
        offset += m
    print("generated", round(time.time() - t0, 1), flush=True)
    for s in range(0, args.n, 200_000):
        x = np.ascontiguousarray(x_all[s:s + 200_000])
        _, a = quantizer.search(x, 4)
        assign[s:s + len(x)] = a
        exact.update(np.arange(s, s + len(x), dtype=np.int64), x)
    x_all.flush()
    assign.flush()
    np.savez(out / "gt.npz", ids=exact.ids, scores=exact.scores, P=planted)
    print("prepared", round(time.time() - t0, 1), flush=True)


def rotation(args, train: np.ndarray) -> np.ndarray | None:
    """y = x @ R (PROJECTED x dims), or None for no rotation."""
    if args.rot == "random":
        rng = np.random.default_rng(5)
        r = np.zeros((PROJECTED, args.dims), np.float32)
        r[:args.dims] = np.linalg.qr(rng.standard_normal((args.dims, args.dims)))[0]
        return r
    if args.rot == "opq":
        opq = faiss.OPQMatrix(PROJECTED, args.m)
        opq.niter = 25
        opq.train(np.ascontiguousarray(train[:100_000]))
        return faiss.vector_to_array(opq.A).reshape(PROJECTED, PROJECTED).T.copy()
    if args.dims != PROJECTED:
        raise SystemExit("--dims below 192 needs --rot random")
    return None


def run(args) -> None:
    work = args.workdir
    set_threads(2)
    x_all = np.load(work / "x.npy", mmap_mode="r")
    assign = np.load(work / "assign.npy", mmap_mode="r")
    gt = np.load(work / "gt.npz")
    planted, gt_ids = int(gt["P"]), gt["ids"]
    queries = np.load(work / "queries.npy")
    train = np.load(work / "train_proj.npy")
    quantizer = faiss.read_index(str(work / "quantizer.idx"))
    nlist = quantizer.ntotal
    n = args.n or len(x_all)
    t0 = time.time()
    r = rotation(args, train)
    rotate = (lambda v: np.ascontiguousarray(v @ r)) if r is not None else (lambda v: v)
    if r is not None:      # the same cells, with rotated centroids for the queries' ranking
        centroids = faiss.rev_swig_ptr(quantizer.get_xb(), nlist * PROJECTED).reshape(nlist, PROJECTED)
        rotated = faiss.IndexFlatIP(args.dims)
        rotated.add(rotate(centroids))
        quantizer = rotated
    ivf = faiss.IndexIVFPQFastScan(quantizer, args.dims, nlist, args.m, 4, faiss.METRIC_INNER_PRODUCT, args.bbs)
    ivf.by_residual = bool(args.residual)
    ivf.train(rotate(train))
    centroids = faiss.rev_swig_ptr(quantizer.get_xb(), nlist * args.dims).reshape(nlist, args.dims)
    # FAISS 1.15's fast-scan add_core/add_sa_codes store unpacked codes (searches then miss);
    # add_with_ids with a one-centroid quantizer per cell puts vectors in a chosen cell.
    single = faiss.IndexIDMap2(faiss.IndexFlatIP(args.dims))

    def add_to_cells(x, ids, cells):
        order = np.argsort(cells, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(cells[order])) + 1):
            cell = int(cells[group[0]])
            single.reset()
            single.add_with_ids(centroids[cell:cell + 1], np.array([cell], np.int64))
            ivf.quantizer = single
            ivf.add_with_ids(np.ascontiguousarray(x[group]), ids[group])
        ivf.quantizer = quantizer

    codec = faiss.IndexScalarQuantizer(PROJECTED, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    codec.sq.rangestat_arg = 0.1
    codec.train(train)
    codes = np.empty((n, PROJECTED), np.uint8)
    for s in range(0, n, 500_000):
        x = np.ascontiguousarray(x_all[s:min(s + 500_000, n)])
        ids = np.arange(s, s + len(x), dtype=np.int64)
        codes[s:s + len(x)] = codec.sa_encode(x)
        for j in range(args.spill):
            add_to_cells(rotate(x), ids, np.ascontiguousarray(assign[s:s + len(x), j]).astype(np.int64))
    print(json.dumps({"build_s": round(time.time() - t0, 1), "entries": ivf.ntotal}), flush=True)

    # 8-bit codes rescored as codes @ (q * step) + q . base (the codec's decode, folded)
    trained = faiss.vector_to_array(codec.sq.trained).reshape(2, PROJECTED)
    step = trained[1] / 255.0
    base = trained[0] + 0.5 * step
    rotated_queries = rotate(queries)
    set_threads(args.threads)
    order = np.random.default_rng(1).permutation(len(queries))
    planted_q, random_q = order[order < planted], order[order >= planted]
    for conf, implem in itertools.product(args.sweep.split(","), args.implem.split(",")):
        nprobe, shortlist = map(int, conf.split(":"))
        ivf.implem = int(implem)
        ivf.nprobe = nprobe
        lat, lat_scan = [], []
        top = np.full(len(queries), -1, np.int64)
        in_cand = np.zeros(len(queries), bool)
        in16 = np.zeros(len(queries), bool)
        for i, qi in enumerate(np.concatenate([order[:20], order])):     # 20 warm-up queries
            t = time.perf_counter()
            _, cand = ivf.search(rotated_queries[qi:qi + 1], shortlist)
            t_scan = time.perf_counter()
            c = cand[0][cand[0] >= 0]
            if args.spill > 1:
                c = np.unique(c)
            scores = codes[c].astype(np.float32) @ (queries[qi] * step) + queries[qi] @ base
            best = c[np.argsort(-scores, kind="stable")[:16]]
            t_end = time.perf_counter()
            if i >= 20:
                lat.append(t_end - t)
                lat_scan.append(t_scan - t)
                top[qi], in_cand[qi], in16[qi] = best[0], gt_ids[qi, 0] in c, gt_ids[qi, 0] in best
        lat, lat_scan = np.array(lat) * 1000, np.array(lat_scan) * 1000
        print(json.dumps({
            "m": args.m, "dims": args.dims, "rot": args.rot, "residual": args.residual, "spill": args.spill,
            "nprobe": nprobe, "shortlist": shortlist, "threads": args.threads, "implem": implem,
            "p50": round(float(np.median(lat)), 2), "p99": round(pct(lat, 99), 2),
            "ivf_p50": round(float(np.median(lat_scan)), 2),
            "planted_r1": round(float(np.mean(top[planted_q] == gt_ids[planted_q, 0])), 4),
            "planted_incand": round(float(np.mean(in_cand[planted_q])), 4),
            "planted_in16": round(float(np.mean(in16[planted_q])), 4),
            "random_r1": round(float(np.mean(top[random_q] == gt_ids[random_q, 0])), 4),
            "random_incand": round(float(np.mean(in_cand[random_q])), 4),
            "random_in16": round(float(np.mean(in16[random_q])), 4),
        }), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("prepare", "run"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fgwork/variants"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/fgwork/lfwdev.npz"))
    ap.add_argument("--n", type=int, default=10_000_000, help="gallery size (run: 0 = all prepared)")
    ap.add_argument("--queries", type=int, default=1000, help="prepare: random (unmated) queries")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--dims", type=int, default=PROJECTED)
    ap.add_argument("--rot", choices=("none", "random", "opq"), default="none")
    ap.add_argument("--residual", type=int, default=0)
    ap.add_argument("--spill", type=int, choices=(1, 2), default=1)
    ap.add_argument("--implem", default="14", help="comma list; 14 needs --bbs 32")
    ap.add_argument("--bbs", type=int, default=32, help="codes per fast-scan block (a multiple of 32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sweep", default="1700:1000", help="comma list of nprobe:shortlist")
    args = ap.parse_args(argv)
    (prepare if args.command == "prepare" else run)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
