"""Scale benchmark for the 1:N vector index (issue 3): latency, recall@1 against exact search,
build time and memory per identity at 100k .. 10M identities.

Gallery data: synthetic embeddings fitted to the real distribution plus planted real identities.
  * Real embeddings come from an embedding cache written by ``facegate eval`` (arrays ``names``,
    ``emb``, ``err``; default /tmp/fgwork/lfwdev.npz, made with
    ``facegate eval --pairs ../shared/data/lfw-dev/pairs.txt --images ../shared/data/lfw-dev/images
    --cache /tmp/fgwork/lfwdev.npz``).
  * One photo per person is kept to fit a Gaussian (mean + covariance with shrinkage towards the
    isotropic part, since people < dimensions); synthetic identities are samples of it,
    L2-normalised. The script prints the cosine statistics of random pairs of real people and of
    synthetic identities so the fit can be judged.
  * Planted identities: for every person with >= 2 photos, the first photo is enrolled among the
    synthetic ones and the second photo is the query ("planted" queries: the mate exists).
  * "random" queries are fresh synthetic identities that are not enrolled (no mate).
Vectors are generated in chunks from a seed (never the whole gallery in memory); exact top-k for
all queries is computed by streaming the same chunks.

    .venv/bin/python -m benchmarks.index_scale --sizes 100000,1000000 --queries 1000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, pct, uptime
from facegate.config import Settings
from facegate.gallery.vectors import VectorIndex, set_threads
from facegate.matching.operating_points import OperatingPoints

CHUNK = 100_000
PLANT_BASE = 10**12          # planted identities get ids PLANT_BASE + j
# The gallery's 1:N rule at its defaults (identify_fmr on the default pack, identify_margin).
IDENTIFY_THRESHOLD, _ = OperatingPoints.from_file(REPO / "facegate" / "calibration" / "default.json").threshold_for(
    Settings().identify_fmr)
IDENTIFY_MARGIN = Settings().identify_margin
THRESHOLD_FMR_1E4 = None     # filled from the calibration file


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- distribution
class FittedGaussian:
    """N(mean, cov) fitted to one real embedding per person, sampled and L2-normalised."""

    def __init__(self, real: np.ndarray, shrink: float):
        x = real.astype(np.float64)
        self.mean = x.mean(0)
        cov = np.cov(x - self.mean, rowvar=False)
        iso = np.trace(cov) / cov.shape[0]
        cov = (1 - shrink) * cov + shrink * iso * np.eye(cov.shape[0])
        w, v = np.linalg.eigh(cov)
        self.factor = (v * np.sqrt(np.clip(w, 0, None))).T.astype(np.float32)   # z @ factor ~ N(0,cov)
        self.mean32 = self.mean.astype(np.float32)
        self.dim = real.shape[1]

    def sample(self, n: int, seed: int) -> np.ndarray:
        z = np.random.default_rng(seed).standard_normal((n, self.dim), dtype=np.float32)
        x = z @ self.factor
        x += self.mean32
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def pair_cosines(x: np.ndarray, n_pairs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(x), n_pairs)
    b = rng.integers(0, len(x), n_pairs)
    keep = a != b
    return np.einsum("ij,ij->i", x[a[keep]], x[b[keep]])


def load_real(cache: Path):
    data = np.load(cache)
    names, emb, err = data["names"], data["emb"].astype(np.float32), data["err"]
    ok = err == ""
    names, emb = names[ok], emb[ok]
    people = np.array([n.split("/")[0] for n in names])
    first, mate = {}, {}
    for i, p in enumerate(people):
        if p not in first:
            first[p] = i
        elif p not in mate:
            mate[p] = i
    one_per_person = emb[list(first.values())]
    planted = sorted(mate)
    gallery = emb[[first[p] for p in planted]]
    probes = emb[[mate[p] for p in planted]]
    return one_per_person, gallery, probes, people


def distribution_report(real_people: np.ndarray, fit: FittedGaussian, seed: int) -> dict:
    real = pair_cosines(real_people, 200_000, seed)
    synth_x = fit.sample(len(real_people) * 4, seed + 1)
    synth = pair_cosines(synth_x, 200_000, seed + 2)

    def summary(c):
        return {"mean": float(c.mean()), "std": float(c.std()), "p99.99": float(np.quantile(c, 0.9999)),
                "max": float(c.max()), "pairs": int(len(c))}
    return {"real_impostor": summary(real), "synthetic_impostor": summary(synth)}


# --------------------------------------------------------------------------- exact top-k
class StreamingTopK:
    def __init__(self, queries: np.ndarray, k: int):
        self.q = queries
        self.k = k
        self.scores = np.full((len(queries), k), -np.inf, np.float32)
        self.ids = np.full((len(queries), k), -1, np.int64)

    def update(self, ids: np.ndarray, x: np.ndarray) -> None:
        for s in range(0, len(x), 25_000):
            sc = self.q @ x[s:s + 25_000].T
            kk = min(self.k, sc.shape[1])
            part = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
            cand_s = np.concatenate([self.scores, np.take_along_axis(sc, part, 1)], 1)
            cand_i = np.concatenate([self.ids, ids[s:s + 25_000][part]], 1)
            order = np.argsort(-cand_s, axis=1)[:, :self.k]
            self.scores = np.take_along_axis(cand_s, order, 1)
            self.ids = np.take_along_axis(cand_i, order, 1)


# --------------------------------------------------------------------------- one size
def run_size(n: int, kind: str, args, fit: FittedGaussian, plant_gallery, plant_probes, threshold) -> dict:
    n_planted = len(plant_gallery)
    n_synth = n - n_planted
    random_queries = fit.sample(args.queries, args.seed + 999_983)
    queries = np.concatenate([plant_probes, random_queries]).astype(np.float32)
    planted_ids = PLANT_BASE + np.arange(n_planted, dtype=np.int64)

    kind, *opts = kind.split("/")           # e.g. ivf_pq/m=128/nlist=4096
    index = VectorIndex.for_size(fit.dim, n, kind=kind)
    for opt in opts:
        key, value = opt.split("=")
        index.params[key] = (value.lower() == "true") if value.lower() in ("true", "false") else int(value)
    if "nlist" in dict(o.split("=") for o in opts):
        index.params["train_size"] = index._default_train_size()
    if args.nprobe:
        set_effort(index, str(args.nprobe))

    exact = StreamingTopK(queries, 10)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    train_s = 0.0
    if index.kind != "flat":
        size = min(index.params["train_size"], max(n_synth, 10_000))
        sample = fit.sample(size, args.seed + 7)
        t = time.perf_counter()
        index.train(sample)
        train_s = time.perf_counter() - t
        del sample
    gen_s = gt_s = add_s = 0.0
    # planted real identities first, then synthetic chunks
    index.add(planted_ids, plant_gallery)
    exact.update(planted_ids, plant_gallery)
    for c, start in enumerate(range(0, n_synth, CHUNK)):
        m = min(CHUNK, n_synth - start)
        t = time.perf_counter()
        x = fit.sample(m, args.seed * 1_000_003 + c)
        ids = np.arange(start, start + m, dtype=np.int64)
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        index.add(ids, x)
        add_s += time.perf_counter() - t
        t = time.perf_counter()
        exact.update(ids, x)
        gt_s += time.perf_counter() - t
        if args.verbose and c % 10 == 0:
            print(f"  {kind} n={n}: {start + m:,} added, rss {rss_mb():.0f} MB", flush=True)
    build_s = time.perf_counter() - t0 - gen_s - gt_s
    rss_after = rss_mb()

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t = time.perf_counter()
        index.save(Path(tmp) / "snap.idx", applied_seq=n)
        save_s = time.perf_counter() - t
        snap_bytes = (Path(tmp) / "snap.idx").stat().st_size
        t = time.perf_counter()
        loaded, seq = VectorIndex.load(Path(tmp) / "snap.idx")
        load_s = time.perf_counter() - t
        assert seq == n and len(loaded) == len(index)
        probe = queries[:1]     # the loaded snapshot answers as the index it was saved from
        assert np.array_equal(loaded.search(probe, 10, stop_score=0.6)[1], index.search(probe, 10, stop_score=0.6)[1])
        del loaded
    st = index.stats()
    res = {
        "n": n, "kind": index.kind, "spec": "/".join([kind, *opts]), "factory": st["factory"], "params": st["params"],
        "planted": n_planted, "random_queries": int(args.queries),
        "build_s": round(build_s, 1), "train_s": round(train_s, 1), "add_s": round(add_s, 1),
        "generate_s": round(gen_s, 1), "exact_gt_s": round(gt_s, 1),
        "save_s": round(save_s, 2), "load_s": round(load_s, 2),
        "index_bytes_est": st["bytes"], "bytes_per_identity_est": round(st["bytes"] / n, 1),
        "snapshot_bytes": snap_bytes, "snapshot_bytes_per_identity": round(snap_bytes / n, 1),
        "rss_delta_mb": round(rss_after - rss0, 1),
        "random_exact": {
            "top1_score_mean": float(exact.scores[n_planted:, 0].mean()),
            "top1_minus_top2_mean": float((exact.scores[n_planted:, 0] - exact.scores[n_planted:, 1]).mean()),
            "top1_above_threshold": float(np.mean(exact.scores[n_planted:, 0] >= threshold)),
        },
        "planted_exact_rank1": float(np.mean(exact.ids[:n_planted, 0] == planted_ids)),
        "sweep": [],
    }
    default_effort = index.params.get("ef_search" if index.kind == "hnsw_sq" else "nprobe", 0)
    nprobes = ["0"] if index.kind == "flat" else (args.nprobe_sweep.split(",")
                                                 if args.nprobe_sweep else [str(default_effort)])
    for nprobe in nprobes:
        stop_score = set_effort(index, nprobe) if nprobe != "0" else None
        res["sweep"].append(measure(index, queries, exact, n_planted, planted_ids, threshold, args, nprobe, stop_score))
        print(json.dumps(res["sweep"][-1]), flush=True)
    res["peak_rss_mb"] = round(peak_rss_mb(), 0)
    return res


def set_effort(index: VectorIndex, value: str) -> float | None:
    """nprobe for the IVF kinds, efSearch for hnsw_sq;
    ``nprobe:shortlist[:stop_score[:first_probe[:scan_parts]]]`` for ivf_pq_refine (a field left
    out is the index's default). Returns the stop score to search with (None: one stage, full
    depth)."""
    effort, shortlist, stop, first, parts = (value.split(":") + ["", "", "", ""])[:5]
    if index.kind == "hnsw_sq":
        index.set_ef_search(int(effort))
    else:
        index.set_nprobe(int(effort))
    if shortlist:
        index.params["shortlist"] = int(shortlist)
    if index.kind == "ivf_pq_refine":
        index.params["first_probe"] = int(first or 0)
        index.params["scan_parts"] = int(parts or 0)
    return float(stop) if stop and float(stop) > 0 else None


def measure(index, queries, exact, P, planted_ids, threshold, args, nprobe, stop_score=None) -> dict:
    """Single-query k=10 latency and recall of the approximate answers against the exact ones."""
    set_threads(args.threads)
    order = np.random.default_rng(args.seed).permutation(len(queries))
    lat = np.zeros(len(queries))
    k = max(10, args.candidates)
    cand_ids = np.empty((len(queries), k), np.int64)
    cand_scores = np.empty((len(queries), k), np.float32)
    stopped = np.zeros(len(queries), bool)
    for qi in order[:20]:   # warm-up
        index.search(queries[qi:qi + 1], k, stop_score=stop_score)
    staged = index.stats().get("staged_searches", {})
    for qi in order:
        before = staged.get("stopped_early", 0)
        t = time.perf_counter()
        s, i = index.search(queries[qi:qi + 1], k, stop_score=stop_score)
        lat[qi] = time.perf_counter() - t
        staged = index.stats().get("staged_searches", {})
        stopped[qi] = staged.get("stopped_early", 0) > before
        cand_ids[qi], cand_scores[qi] = i[0], s[0]
    approx_ids, approx_scores = cand_ids[:, :10], cand_scores[:, :10]
    set_threads(args.build_threads)
    lat = lat * 1000

    def percentiles(sl):
        return {f"p{q}": round(pct(lat[sl], q), 3) for q in (50, 90, 99)}

    def margin_decisions(scores):
        """The gallery's 1:N rule on the top two (one template per identity here): no match
        under the identify threshold, ambiguous within the margin of the second, else match."""
        return np.where(scores[:, 0] < IDENTIFY_THRESHOLD, 0, np.where(scores[:, 0] - scores[:, 1] < IDENTIFY_MARGIN, 1, 2))

    def recall_at1(sl):
        return float(np.mean(approx_ids[sl, 0] == exact.ids[sl, 0]))

    def recall10_at10(sl):
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx_ids[sl], exact.ids[sl])]))

    def agreement(sl):
        a = np.where(approx_scores[sl, 0] >= threshold, approx_ids[sl, 0], -1)
        e = np.where(exact.scores[sl, 0] >= threshold, exact.ids[sl, 0], -1)
        return float(np.mean(a == e))

    def top1_in_candidates(sl, m):
        """The exact top-1 is among the first m candidates: what exact rescoring of the
        candidates (as the gallery does with the stored templates) turns into recall@1."""
        return float(np.mean([e in c[:m] for e, c in zip(exact.ids[sl, 0], cand_ids[sl])]))

    planted, rnd = slice(0, P), slice(P, None)
    approx_decision, exact_decision = margin_decisions(approx_scores), margin_decisions(exact.scores)
    rescored = {f"planted_recall@1_rescored_top{m}": top1_in_candidates(planted, m)
                for m in sorted({16, k}) if m <= k}
    rescored.update({f"random_recall@1_rescored_top{m}": top1_in_candidates(rnd, m)
                     for m in sorted({16, k}) if m <= k})
    return {
        "nprobe": nprobe,
        "shortlist": index.params.get("shortlist"),
        "stop_score": stop_score,
        "first_probe": index.params.get("first_probe"),
        "scan_parts": index.params.get("scan_parts"),
        "latency_ms": percentiles(slice(None)),
        "latency_ms_planted": percentiles(planted),
        "latency_ms_random": percentiles(rnd),
        "planted_stopped_early": float(np.mean(stopped[planted])),
        "random_stopped_early": float(np.mean(stopped[rnd])),
        "planted_margin_decision_agreement": float(np.mean(approx_decision[planted] == exact_decision[planted])),
        "random_margin_decision_agreement": float(np.mean(approx_decision[rnd] == exact_decision[rnd])),
        # of the searches that stopped early, how many reached another decision than exact search
        "stopped_early": int(stopped.sum()),
        "stopped_decision_disagreements": int(np.sum(approx_decision[stopped] != exact_decision[stopped])),
        "planted_recall@1_vs_exact": recall_at1(planted),
        "planted_rank1_identification": float(np.mean(approx_ids[planted, 0] == planted_ids)),
        "planted_decision_agreement": agreement(planted),
        "planted_top1_score_abs_err": float(np.mean(np.abs(approx_scores[planted, 0] - exact.scores[planted, 0]))),
        "random_recall@1_vs_exact": recall_at1(rnd),
        "random_10-recall@10_vs_exact": recall10_at10(rnd),
        "random_decision_agreement": agreement(rnd),
        "search_k": k,
        **rescored,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--kinds", default="auto", help="comma list of index kinds per size (auto, flat, ivf_sq, ivf_pq, hnsw_sq), each optionally "
                    "with /key=value parameter overrides, e.g. ivf_pq/m=128/nlist=8192")
    ap.add_argument("--queries", type=int, default=1000, help="random (unmated) synthetic queries")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/fgwork/lfwdev.npz"))
    ap.add_argument("--threads", type=int, default=2, help="FAISS threads while measuring search latency")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--nprobe", type=int, default=0)
    ap.add_argument("--nprobe-sweep", default="", help="comma list of nprobe values (efSearch for hnsw_sq; "
                    "nprobe:shortlist[:stop_score[:first_probe[:scan_parts]]] for ivf_pq_refine) "
                    "measured on one build")
    ap.add_argument("--candidates", type=int, default=10, help="k asked of the index per query (latency includes it); "
                    "recall after exact rescoring of the top 16 / top k candidates is reported")
    ap.add_argument("--shrink", type=float, default=0.0, help="covariance shrinkage towards isotropic")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tmp", default=None, help="folder for the snapshot written to time save/load")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    set_threads(args.build_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.build_threads))
    calib = json.loads((REPO / "facegate" / "calibration" / "default.json").read_text())
    threshold = next(p["threshold"] for p in calib["points"] if p["fmr"] == 0.0001)

    one_per_person, plant_gallery, plant_probes, _ = load_real(args.cache)
    fit = FittedGaussian(one_per_person, args.shrink)
    dist = distribution_report(one_per_person, fit, args.seed)
    header = {
        "machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.processor() or platform.machine()}",
        "uptime_before": uptime(),
        "real_people": int(len(one_per_person)), "planted_identities": int(len(plant_gallery)),
        "threshold_fmr_1e-4": threshold, "distribution": dist, "args": {k: str(v) for k, v in vars(args).items()},
    }
    print(json.dumps(header, indent=1), flush=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for kind in args.kinds.split(","):
            r = run_size(n, kind, args, fit, plant_gallery, plant_probes, threshold)
            r["uptime_after"] = uptime()
            print(json.dumps(r, indent=1), flush=True)
            results.append(r)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
