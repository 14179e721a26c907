"""Which index a gallery gets: the kind and its parameters, chosen from the expected number of
templates and the kind asked for, and the parameter table every kind starts from. Pure
choices (no FAISS): the mechanics that build and search each kind are in the sibling modules.

The figures behind the choices are in benchmarks/results/index_scale.md, whose section titles
are named below.
"""
from __future__ import annotations

import math

KINDS = ("flat", "ivf_sq", "ivf_pq", "ivf_pq_refine", "hnsw_sq")

# for_size() keeps exact search up to here: a flat single query scans every template on one
# thread (FAISS parallelises over queries, not within one), so its latency grows linearly with
# n and sets this bound (section "1:N index at scale (issue 3)", Gaps).
FLAT_MAX = 100_000
# ivf_pq_refine's most cells: at 10M, 8,192 cells reached the recall of 16,384 sooner, FAISS's
# coarse top-nprobe being costly at 16,384 (section "Two-stage `ivf_pq_refine` (session 2)";
# the index now ranks cells itself, so 16,384 is worth measuring again: session 6's goal list).
REFINE_MAX_NLIST = 8192
# k-means wants at least this many training points per cell (FAISS warns below it).
POINTS_PER_CELL = 39
# The least an IVF kind stages before training, however few its cells: the same sample trains
# its PCA, OPQ and PQ codebooks.
MIN_TRAIN_SIZE = 10_000
# hnsw_sq trains only its PCA and the scalar quantiser's ranges: no cells to fill.
HNSW_TRAIN_SIZE = 20_000

DEFAULTS = {
    "flat": {},
    "ivf_sq": {"nlist": 1024, "nprobe": 16, "qtype": "SQ8", "pca": 0, "hnsw_quantizer": False},
    "ivf_pq": {"nlist": 4096, "nprobe": 32, "m": 64, "nbits": 4, "opq": False, "pca": 0,
               "hnsw_quantizer": False},
    "ivf_pq_refine": {"nlist": 4096, "nprobe": 384, "m": 0, "pca": 0, "scan_dims": 0, "shortlist": 300,
                      "first_probe": 0, "scan_parts": 0, "spill": 2, "soar_lambda": 1.0},
    "hnsw_sq": {"pca": 128, "m": 16, "ef_construction": 64, "ef_search": 128, "normalize": False},
}


def choose(expected_n: int, kind: str = "auto") -> tuple[str, dict]:
    """The kind and parameters for a gallery of about ``expected_n`` templates.

    ``auto``: exact ``flat`` up to ``FLAT_MAX`` (no training, no approximation, still fast
    there), ``ivf_pq_refine`` beyond (the kind that meets the recall@1 goal on mated queries
    and the memory budget per template at 1M and 10M, in a few ms: section "Cells of the
    projection, SOAR spill (session 6)"). ``nlist`` grows as ~2*sqrt(n) (a power of two;
    ~4*sqrt(n) up to ``REFINE_MAX_NLIST`` for ``ivf_pq_refine``, which probes 3/32 of its
    cells, each template being in two of them), keeping k-means training
    (``POINTS_PER_CELL`` per cell) affordable on 2 cores at 10M.
    """
    n = max(int(expected_n), 1)
    if kind == "auto":
        kind = "flat" if n <= FLAT_MAX else "ivf_pq_refine"
    if kind in ("flat", "hnsw_sq"):
        return kind, {}
    if kind == "ivf_pq_refine":
        nlist = min(int(2 ** round(math.log2(max(4 * math.sqrt(n), 64)))), REFINE_MAX_NLIST)
        return kind, {"nlist": nlist, "nprobe": max(16, nlist * 3 // 32)}
    nlist = int(2 ** round(math.log2(max(2 * math.sqrt(n), 64))))
    # Face embeddings of one person are far apart for IVF, so a query's mate is often outside
    # the nearest cells: a quarter of the cells must be probed for most mates to be found.
    # 4-bit PQ's recall saturates earlier (its own ranking errors), so nlist/8 there (section
    # "1:N index at scale (issue 3)", Findings 1).
    if kind == "ivf_sq":
        return kind, {"nlist": nlist, "nprobe": max(8, nlist // 4)}
    if kind == "ivf_pq":
        return kind, {"nlist": nlist, "nprobe": max(16, nlist // 8)}
    raise ValueError(f"unknown index kind {kind!r}")


def parameters(kind: str, params: dict) -> dict:
    """``params`` over the kind's defaults, checked, with ``train_size`` for the kinds that
    train. Raises ValueError for an unknown kind or parameter."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    unknown = set(params) - set(DEFAULTS[kind]) - {"train_size"}
    if unknown:
        raise ValueError(f"unknown parameters for {kind}: {sorted(unknown)}")
    merged = {**DEFAULTS[kind], **params}
    if kind == "ivf_pq_refine" and merged["spill"] not in (1, 2):
        raise ValueError(f"spill must be 1 or 2 (cells per template), got {merged['spill']!r}")
    if kind != "flat":
        merged.setdefault("train_size", default_train_size(kind, merged))
    return merged


def default_train_size(kind: str, params: dict) -> int:
    """Vectors staged before an index trains: enough for its k-means cells and PQ codebooks."""
    if kind == "hnsw_sq":
        return HNSW_TRAIN_SIZE
    need = POINTS_PER_CELL * params["nlist"]
    if kind == "ivf_pq":     # PQ codebooks want POINTS_PER_CELL per centroid (2**nbits), here 4 times over
        need = max(need, POINTS_PER_CELL * 2 ** params["nbits"] * 4)
    return max(need, MIN_TRAIN_SIZE)


def factory_string(kind: str, dim: int, params: dict) -> str:
    """The ``faiss.index_factory`` description of the trained index (ivf_sq and ivf_pq are
    built from it; for the others it describes what their modules build)."""
    p = params
    if kind == "flat":
        return "IDMap2,Flat"
    if kind == "hnsw_sq":
        return f"IDMap,PCA{p['pca']}(uncentred){',L2norm' if p.get('normalize') else ''},HNSW{p['m']}_SQ8"
    if kind == "ivf_pq_refine":
        d = p["pca"] or "auto"
        return (f"PCA{d}(uncentred),IVF{p['nlist']} cells of the PCA{d} space"
                f"{' (SOAR spill 2)' if p['spill'] == 2 else ''},first {p['scan_dims'] or 'auto'} axes "
                f"rotated,PQ{p['m'] or 'auto'}x4fs + refine SQ8 of the PCA{d} projection")
    parts = []
    if kind == "ivf_pq" and p["opq"]:
        parts.append(f"OPQ{p['m']}_{p['pca'] or dim}")
    elif p.get("pca"):
        parts.append(f"PCA{p['pca']}")
    parts.append(f"IVF{p['nlist']}" + ("_HNSW32" if p.get("hnsw_quantizer") else ""))
    if kind == "ivf_sq":
        parts.append(p["qtype"])
    else:
        parts.append(f"PQ{p['m']}x{p['nbits']}" + ("fs" if p["nbits"] == 4 else ""))
    return ",".join(parts)
