"""FAISS vector index over face templates: exact or compressed approximate search, with
snapshots that record which change-log sequence number they reflect.

Kinds
-----
``flat``
    Exact inner-product search over the raw float32 vectors (``IndexIDMap2(IndexFlatIP)``).
    2 KiB + 8 B per 512-D template. The default for galleries up to ``FLAT_MAX`` templates.
``ivf_sq``
    Inverted file (``nlist`` k-means cells, ``nprobe`` visited per query) with scalar-quantised
    vectors (``qtype`` ``SQ8`` = 1 byte per dimension, ``SQ4``, ``SQfp16``), optionally after a
    PCA to ``pca`` dimensions. Scores are close to exact cosine (SQ8: error ~1e-3).
``ivf_pq``
    Inverted file over product-quantised codes (``m`` sub-quantisers of ``nbits`` bits; 4 bits
    uses FAISS's SIMD "fast-scan" kernels), after an OPQ rotation (``opq=True``) that spreads the
    variance evenly over the sub-quantisers. The compressed kind for 10M+ galleries; scores are
    approximate cosine. Measured (benchmarks/results/index_scale.md): 4-bit PQ scores are
    biased low by ~0.3-0.5 on this embedder and mis-rank mates (recall@1 on mated queries 0.84
    at 10M), so callers must rescore the top-k candidates with the exact stored templates
    before applying a threshold, and this kind does not meet the 0.99 recall goal; prefer
    ``ivf_sq`` where memory allows.
``ivf_pq_refine``
    Two stages, for large galleries. (1) Candidates: an uncentred PCA to ``pca`` dimensions (0 =
    chosen from the training sample: the smallest multiple of 16 that keeps all but 1e-4 of the
    energy; this pack's embeddings span ~160 dimensions, so 160). Its leading ``scan_dims``
    axes (0 = the fewest, a multiple of 8, holding 97 % of the energy: 128 for this pack) are
    turned by a fixed random rotation, so that each of the ``m`` 4-bit PQ sub-quantisers (0 =
    ``scan_dims`` / 2: two dimensions each) gets an equal share of the variance, and those
    fast-scan codes are kept in an inverted file of ``nlist`` cells. The cells are k-means
    cells of the whole projection; with ``spill`` 2 (the default) every template is stored in
    two of them, its nearest and a second one chosen by SOAR's rule (:meth:`_assign_cells`), so
    that a query finds it in fewer cells. A query's ``nprobe`` nearest cells (ranked by the
    centroids' scanned axes) are scanned and the best ``shortlist`` candidates kept. (2)
    Refinement: every template also keeps an 8-bit scalar-quantised copy of its projection
    (``pca`` bytes); the shortlist is rescored with those (cosine error ~1e-3) and the best
    ``k`` returned. About ``pca`` + 8 + ``spill`` * (m/2 + 8) + 12 bytes per template (260 B
    at the defaults for this pack, plus up to 1/8 of ``pca`` + 8 of growth slack). The
    refinement codes live in rows reused after removal; the IVF stores row numbers as its ids
    and each row records its template id. A single query with a ``stop_score`` is searched in
    two stages: the nearest ``first_probe`` cells (0 = 1/64 of ``nlist``, at least 16) first,
    ending there if a candidate rescores at ``stop_score`` or more, then the remaining cells
    (:meth:`_search_refined`). A single query's cells are split between ``scan_parts`` copies
    of it (0 = one per FAISS thread) scanned in parallel (:meth:`_scan_cells`). Measured on 2
    cores (benchmarks/results/index_scale.md), with the defaults: at 10M (768 of 8,192 cells,
    300 candidates) recall@1 vs exact 0.993 on mated queries, p50 1.3-1.8 ms for mated
    queries with the gallery's stop score 0.6 (75 % stop after 128 cells), 3.9-5.5 ms (median
    4.7) for unmated ones (full depth); at 1M (384 of 4,096) 0.991, 0.8 / 1.8-2.0 ms. Without
    the spill (and with the cells of the scanned axes) 0.99 took 2,560 of 8,192 cells at 10M
    and 1,280 of 4,096 at 1M: 7.1 and 2.4 ms unmated. The default above
    ``FLAT_MAX``. Embeddings that fill all dimensions (nothing projected away) need a longer
    shortlist: 4-bit codes of full 512-D vectors rank coarsely.
``hnsw_sq``
    A graph index: PCA to ``pca`` dimensions (projection only, no centring, so inner products
    are preserved in the kept subspace), then ``IndexHNSWSQ`` (8-bit scalar quantiser, ``m``
    links per node, ``2*m`` on level 0) with ``ef_construction``/``ef_search``. About 128 B of
    codes + 128 B of level-0 links + 8 B id per template at the defaults (see
    :meth:`VectorIndex.memory_bytes`). Each search explores at least 50 candidates
    (``max(k, 50)``) and returns the best ``k`` by approximate score; callers rescore them with
    the exact templates. HNSW cannot delete: removed or replaced templates become tombstones
    (their id slot is set to -1, so they are skipped at search, and more candidates are fetched
    when tombstones are many); they still cost memory and graph work until the index is rebuilt
    from the database, which purges them. Tombstones survive save/load. ``normalize=True``
    re-normalises after the PCA (cosine in the projected space). Measured
    (benchmarks/results/index_scale.md): planted recall@1 0.95 at 100k but 0.75 at 1M
    (efSearch 256, M=16, ~290 B); M=32 (~420 B) reaches 0.98 at 1M with efSearch 1024. Not
    chosen by :meth:`VectorIndex.for_size`.

Training
--------
The approximate kinds need k-means (and OPQ/PQ) training on a sample of the real distribution.
Either call :meth:`VectorIndex.train` with a sample, or just :meth:`add`: until the index is
trained, vectors are kept in an exact staging index (searches stay exact) and, once
``train_size`` vectors have been added, the index trains on them and moves them over. A small
gallery therefore never pays for training it does not need.

Identity and removal
--------------------
``ids`` are int64 template ids. :meth:`add` is an upsert: an id that is already present has its
vector replaced, so replaying a change log over a snapshot that already holds some of its
entries neither duplicates nor loses anything. :meth:`remove` works for every kind. ``flat`` and
``ivf_sq`` drop the entries; ``hnsw_sq`` and the 4-bit fast-scan kinds (``ivf_pq`` with
``nbits=4``, ``ivf_pq_refine``) leave tombstones instead: the slot's id becomes -1 and, for the
fast-scan kinds, its packed code (and refinement row) is zeroed, so an erased face leaves no code
behind. FAISS 1.15's ``IndexIVFFastScan.remove_ids`` cannot be used: vectors added to a list
after it was compacted are mostly not found afterwards (tested in tests/test_vector_index.py).
Tombstones are skipped at search (IVF kinds: by an id selector, since an all-zero code can
outscore every live entry for some queries; ``hnsw_sq``: more candidates are fetched in
proportion) and purged by a rebuild from the database (the gallery rebuilds at start-up when
they pass 20 %).

Threads
-------
FAISS uses OpenMP; :func:`set_threads` caps it (the service passes its configured core count).
"""
from __future__ import annotations

import io
import json
import math
import os
import struct
from pathlib import Path

import faiss
import numpy as np

KINDS = ("flat", "ivf_sq", "ivf_pq", "ivf_pq_refine", "hnsw_sq")

# Sizes at which for_size() switches kind; see benchmarks/results/index_scale.md for the figures
# behind them (flat single-query latency grows linearly: 18 ms p50 at 100k on a 16-core
# server CPU, one thread; ivf_sq at nprobe=nlist/4: 25 ms p50 at 1M).
FLAT_MAX = 100_000
SQ_MAX = 2_000_000

_MAGIC = b"FGVIDX01"
SNAPSHOT_FORMAT = 3     # 3: ivf_pq_refine cells in the PCA space, SOAR spill (2: cells in the scanned
                        # axes; 1: the IVF scanned the raw projection)
_DEFAULTS = {
    "flat": {},
    "ivf_sq": {"nlist": 1024, "nprobe": 16, "qtype": "SQ8", "pca": 0, "hnsw_quantizer": False},
    "ivf_pq": {"nlist": 4096, "nprobe": 32, "m": 64, "nbits": 4, "opq": False, "pca": 0,
               "hnsw_quantizer": False},
    "ivf_pq_refine": {"nlist": 4096, "nprobe": 384, "m": 0, "pca": 0, "scan_dims": 0, "shortlist": 300,
                      "first_probe": 0, "scan_parts": 0, "spill": 2, "soar_lambda": 1.0},
    "hnsw_sq": {"pca": 128, "m": 16, "ef_construction": 64, "ef_search": 128, "normalize": False},
}
HNSW_MIN_CANDIDATES = 50
PCA_MAX_ENERGY_LOSS = 1e-4      # ivf_pq_refine, pca=0: energy the projection may drop
SCAN_ENERGY = 0.97              # ivf_pq_refine, scan_dims=0: energy the scanned leading axes keep
SOAR_CANDIDATES = 32            # ivf_pq_refine, spill=2: nearest cells the second cell is chosen from
REFINE_GROWTH = 8               # ivf_pq_refine: the refinement rows grow by 1/8 when full
REFINE_MAX_NLIST = 8192
REFINE_ROTATION_SEED = 20261126  # ivf_pq_refine: the random rotation of the scanned axes


class SnapshotError(Exception):
    """A snapshot file is missing, truncated or not a facegate index; rebuild from the database."""


def set_threads(n: int | None) -> None:
    """Cap FAISS's OpenMP threads (``None``/0 = one per core)."""
    faiss.omp_set_num_threads(int(n) if n else (os.cpu_count() or 1))


def _as_ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vectors(vectors, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {x.shape}")
    return x


def _flat(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class VectorIndex:
    """A FAISS index of unit vectors keyed by int64 template id (see the module docstring)."""

    def __init__(self, dim: int, kind: str = "flat", **params):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        unknown = set(params) - set(_DEFAULTS[kind]) - {"train_size"}
        if unknown:
            raise ValueError(f"unknown parameters for {kind}: {sorted(unknown)}")
        self.dim = int(dim)
        self.kind = kind
        self.params = {**_DEFAULTS[kind], **params}
        if kind == "ivf_pq_refine" and self.params["spill"] not in (1, 2):
            raise ValueError(f"spill must be 1 or 2 (cells per template), got {self.params['spill']!r}")
        if kind != "flat":
            self.params.setdefault("train_size", self._default_train_size())
        self._index: faiss.Index = _flat(self.dim)   # staging (exact) until trained
        self._trained = kind == "flat"
        self._members = np.empty(0, dtype=np.int64)  # sorted ids present in the index
        self._refine: _RefineCodes | None = None       # ivf_pq_refine: 8-bit copies, in rows
        self._slots = np.empty(0, dtype=np.int32)    # ivf_pq_refine: row of each member
        self._cells: faiss.IndexFlatIP | None = None   # ivf_pq_refine: cell centroids in the PCA space
        self._reset_counters()
        if self._trained:
            self._apply_search_params()

    def _reset_counters(self) -> None:
        """Search counters, which start at zero in every process (not kept in snapshots)."""
        self._staged = {"searches": 0, "stopped_early": 0}   # ivf_pq_refine searches with stop_score

    # ----------------------------------------------------------------- construction
    @classmethod
    def for_size(cls, dim: int, expected_n: int, kind: str = "auto") -> "VectorIndex":
        """An index suited to a gallery of about ``expected_n`` templates.

        ``auto``: exact ``flat`` up to ``FLAT_MAX`` (one query scans 100k templates in ~18 ms
        on one core and costs 2 KiB per template), ``ivf_pq_refine`` beyond (recall@1 0.99 on
        mated queries at 1M and 10M, a few ms, ~260 B per template).
        ``nlist`` grows as ~2*sqrt(n) (power of two; ~4*sqrt(n) up to 8,192 for
        ``ivf_pq_refine``, which probes 3/32 of its cells, each template being in two of
        them), keeping k-means training (>= 39 points per list) affordable on 2 cores at 10M.
        """
        n = max(int(expected_n), 1)
        if kind == "auto":
            kind = "flat" if n <= FLAT_MAX else "ivf_pq_refine"
        if kind == "flat":
            return cls(dim, "flat")
        if kind == "ivf_pq_refine":
            # Capped at 8,192 cells: FAISS's coarse top-nprobe costs 3.3 ms a query at 16,384
            # (0.5 ms at 8,192), and at 10M 8,192 cells reach the same recall 2.5 ms sooner.
            nlist = min(int(2 ** round(math.log2(max(4 * math.sqrt(n), 64)))), REFINE_MAX_NLIST)
            return cls(dim, kind, nlist=nlist, nprobe=max(16, nlist * 3 // 32))
        nlist = int(2 ** round(math.log2(max(2 * math.sqrt(n), 64))))
        # Face embeddings of one person are far apart for IVF (genuine cosine ~0.4-0.7), so a
        # query's mate is often outside the nearest cells: a quarter of the cells must be
        # probed for ~0.97-0.98 recall@1 on mated queries (benchmarks/results/index_scale.md).
        # 4-bit PQ saturates earlier (its own ranking errors), so nlist/8 there: 5 ms at 10M.
        if kind == "ivf_sq":
            return cls(dim, "ivf_sq", nlist=nlist, nprobe=max(8, nlist // 4))
        if kind == "ivf_pq":
            return cls(dim, "ivf_pq", nlist=nlist, nprobe=max(16, nlist // 8))
        if kind == "hnsw_sq":
            return cls(dim, "hnsw_sq")
        raise ValueError(f"unknown index kind {kind!r}")

    def _default_train_size(self) -> int:
        if self.kind == "hnsw_sq":
            return 20_000       # PCA and the scalar quantiser's ranges only
        # k-means wants >= 39 points per cell; PQ codebooks want >= 39 * 2**nbits.
        need = 39 * self.params["nlist"]
        if self.kind == "ivf_pq":
            need = max(need, 39 * 2 ** self.params["nbits"] * 4)
        return max(need, 10_000)

    def factory_string(self) -> str:
        """The ``faiss.index_factory`` description of the trained index."""
        p = self.params
        if self.kind == "flat":
            return "IDMap2,Flat"
        if self.kind == "hnsw_sq":
            return f"IDMap,PCA{p['pca']}(uncentred){',L2norm' if p.get('normalize') else ''},HNSW{p['m']}_SQ8"
        if self.kind == "ivf_pq_refine":
            d = p["pca"] or "auto"
            return (f"PCA{d}(uncentred),IVF{p['nlist']} cells of the PCA{d} space"
                    f"{' (SOAR spill 2)' if p['spill'] == 2 else ''},first {p['scan_dims'] or 'auto'} axes "
                    f"rotated,PQ{p['m'] or 'auto'}x4fs + refine SQ8 of the PCA{d} projection")
        parts = []
        dim = self.dim
        if self.kind == "ivf_pq" and p["opq"]:
            dout = p["pca"] or dim
            parts.append(f"OPQ{p['m']}_{dout}")
        elif p.get("pca"):
            parts.append(f"PCA{p['pca']}")
        quant = f"IVF{p['nlist']}" + ("_HNSW32" if p.get("hnsw_quantizer") else "")
        parts.append(quant)
        if self.kind == "ivf_sq":
            parts.append(p["qtype"])
        else:
            parts.append(f"PQ{p['m']}x{p['nbits']}" + ("fs" if p["nbits"] == 4 else ""))
        del dim
        return ",".join(parts)

    # ----------------------------------------------------------------- training
    @property
    def is_trained(self) -> bool:
        return self._trained

    def train(self, sample: np.ndarray) -> None:
        """Train an approximate index on ``sample`` (unit vectors from the real distribution)
        and move any vectors staged so far into it. A no-op for ``flat``."""
        if self._trained:
            return
        sample = _as_vectors(sample, self.dim)
        if self.kind == "hnsw_sq":
            index = self._train_hnsw(sample)
        elif self.kind == "ivf_pq_refine":
            index = self._train_refine(sample)
        else:
            index = faiss.index_factory(self.dim, self.factory_string(), faiss.METRIC_INNER_PRODUCT)
            faiss.extract_index_ivf(index).cp.niter = 10    # enough for IVF cells; default 25 costs 2.5x
            index.train(sample)
        staged = self._index
        self._index = index
        self._trained = True
        self._apply_search_params()
        n = staged.ntotal
        if n:
            ids = faiss.vector_to_array(staged.id_map).astype(np.int64)
            if self.kind == "ivf_pq_refine":
                self._members = np.empty(0, dtype=np.int64)    # re-added with their rows below
            for start in range(0, n, 65536):
                chunk = staged.index.reconstruct_n(start, min(65536, n - start))
                if self.kind == "ivf_pq_refine":
                    self._add_refined(ids[start:start + len(chunk)], chunk)
                else:
                    self._index.add_with_ids(chunk, ids[start:start + len(chunk)])

    def _train_refine(self, sample: np.ndarray) -> faiss.Index:
        p = self.params
        lost = _energy_lost(sample) if not (p["pca"] and p["scan_dims"]) else None
        if not p["pca"]:
            p["pca"] = _dims_keeping(lost, PCA_MAX_ENERGY_LOSS, 16)
        d = int(p["pca"])
        if not p["scan_dims"]:
            p["scan_dims"] = _dims_keeping(lost, 1.0 - SCAN_ENERGY, 8)
        p["scan_dims"] = scan_dims = min(int(p["scan_dims"]), d)
        if not p["m"]:
            p["m"] = scan_dims // 2
        if p["nlist"] < 2:
            p["spill"] = 1
        pca = faiss.PCAMatrix(self.dim, d)
        pca.train(sample)
        faiss.copy_array_to_vector(np.zeros(d, np.float32), pca.b)   # x -> A x keeps inner products
        projected = pca.apply(sample)
        # The cells are regions of the whole projection, not of the scanned axes: SOAR's second
        # cell needs the residual to the first (benchmarks/results/index_scale.md: at equal
        # recall the spill saved a fifth of the search time with cells of the scanned axes,
        # four tenths with cells of the projection).
        cells = faiss.IndexFlatIP(d)
        clustering = faiss.Clustering(d, int(p["nlist"]))
        clustering.niter = 10           # enough for IVF cells; FAISS's default 25 costs 2.5x
        clustering.spherical = True     # unit centroids, as FAISS's inner-product IVF trains them
        clustering.train(projected, cells)
        scan = _rotated_leading_axes(d, scan_dims)
        quantizer = faiss.IndexFlatIP(scan_dims)     # ranks a query's cells in the scanned axes
        quantizer.add(scan.apply(_centroids(cells)))
        ivf = faiss.IndexIVFPQFastScan(quantizer, scan_dims, int(p["nlist"]), int(p["m"]), 4,
                                       faiss.METRIC_INNER_PRODUCT)
        ivf.by_residual = False
        ivf.own_fields = True
        quantizer.this.disown()
        ivf.train(scan.apply(projected))       # the PQ only: the quantizer already holds the cells
        codec = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        codec.sq.rangestat_arg = 0.1      # per-dimension ranges 10% wider than the sample's: later
        codec.train(projected)            # templates beyond them would be clipped
        self._refine = _RefineCodes(codec)
        self._cells = cells
        self._slots = np.empty(0, dtype=np.int32)
        index = faiss.IndexPreTransform(scan, ivf)     # x -> PCA -> leading axes rotated -> IVF
        index.prepend_transform(pca)
        return index

    def _assign_cells(self, projected: np.ndarray) -> np.ndarray:
        """The cells of projected templates, ``[n, spill]``: the nearest cell, and with
        ``spill`` 2 a second one by SOAR's rule (Sun et al., "SOAR: improved indexing for
        approximate nearest neighbor search", NeurIPS 2023): among the ``SOAR_CANDIDATES``
        nearest cells, the one minimising ||x - c||^2 + lambda * (r.(x - c))^2 / ||r||^2, r being
        the residual to the first cell. A second cell along r would fail the same queries the
        first fails (those nearly parallel to r); one orthogonal to r covers them."""
        spill = int(self.params["spill"])
        centroids = _centroids(self._cells)
        k = 1 if spill == 1 else min(SOAR_CANDIDATES, len(centroids))
        near_scores, near = self._cells.search(np.ascontiguousarray(projected, dtype=np.float32), k)
        if spill == 1:
            return near
        first = near[:, 0]
        # c1.cj from the Gram rows of the first cells, a block of cells at a time
        first_dot = np.empty_like(near_scores)
        order = np.argsort(first, kind="stable")
        cells, starts = np.unique(first[order], return_index=True)
        starts = np.append(starts, len(order))
        for b in range(0, len(cells), 1024):
            block = cells[b:b + 1024]
            rows = order[starts[b]:starts[min(b + 1024, len(cells))]]
            gram = centroids[block] @ centroids.T
            first_dot[rows] = gram[np.searchsorted(block, first[rows])[:, None], near[rows]]
        norms = np.einsum("ij,ij->i", centroids, centroids)
        xx = np.einsum("ij,ij->i", projected, projected)
        x_c1 = near_scores[:, 0]
        residual_sq = np.maximum(xx - 2 * x_c1 + norms[first], 1e-12)
        along = (xx - x_c1)[:, None] - (near_scores - first_dot)           # r.(x - cj)
        cost = norms[near] - 2 * near_scores + float(self.params["soar_lambda"]) * along * along / residual_sq[:, None]
        cost[:, 0] = np.inf
        second = near[np.arange(len(near)), np.argmin(cost, axis=1)]
        return np.stack([first, second], axis=1)

    def _add_to_cells(self, scan: np.ndarray, rows: np.ndarray, cells: np.ndarray) -> None:
        """Store the fast-scan codes of ``scan`` under their row numbers in the given cells
        (``[n, copies]``). FAISS 1.15's fast-scan IVF takes no precomputed assignment (its
        ``add_core`` stores codes the scan does not find), so the vectors of each cell are
        added through a stand-in quantizer holding only that cell's centroid."""
        ivf = self._ivf_fast_scan()
        quantizer = ivf.quantizer
        centroids = _centroids(faiss.downcast_index(quantizer))
        copies = cells.shape[1]
        source = np.tile(np.arange(len(rows)), copies)
        targets = np.ascontiguousarray(cells.T).ravel()
        order = np.argsort(targets, kind="stable")
        bounds = np.flatnonzero(np.diff(targets[order])) + 1
        stand_in = faiss.IndexIDMap2(faiss.IndexFlatIP(ivf.d))
        try:
            for group in np.split(order, bounds):
                cell = int(targets[group[0]])
                stand_in.reset()
                stand_in.add_with_ids(centroids[cell:cell + 1], np.array([cell], np.int64))
                ivf.quantizer = stand_in
                ivf.add_with_ids(np.ascontiguousarray(scan[source[group]]), rows[source[group]])
        finally:
            ivf.quantizer = quantizer
        self._index.ntotal = ivf.ntotal

    def _project(self, x: np.ndarray) -> np.ndarray:
        """The PCA projection the refinement codes are made of."""
        return faiss.downcast_VectorTransform(self._index.chain.at(0)).apply(x)

    def _scan_project(self, projected: np.ndarray) -> np.ndarray:
        """From the PCA projection to the rotated leading axes the IVF scans."""
        return faiss.downcast_VectorTransform(self._index.chain.at(1)).apply(projected)

    def _ivf_fast_scan(self) -> faiss.Index:
        return faiss.downcast_index(self._index.index)

    def _train_hnsw(self, sample: np.ndarray) -> faiss.Index:
        p = self.params
        dout = int(p["pca"]) or self.dim
        hnsw = faiss.IndexHNSWSQ(dout, faiss.ScalarQuantizer.QT_8bit, int(p["m"]), faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(p["ef_construction"])
        if dout == self.dim:
            inner: faiss.Index = hnsw
        else:
            pca = faiss.PCAMatrix(self.dim, dout)
            pca.train(sample)
            # Drop the centring: x -> A x keeps <x, y> ~ <Ax, Ay>; A(x - mean) would not.
            faiss.copy_array_to_vector(np.zeros(dout, np.float32), pca.b)
            if p.get("normalize"):     # cosine in the projected space (a proper metric for the graph)
                inner = faiss.IndexPreTransform(faiss.NormalizationTransform(dout, 2.0), hnsw)
                inner.prepend_transform(pca)
            else:
                inner = faiss.IndexPreTransform(pca, hnsw)
        inner.train(sample)        # the SQ ranges, on the projected sample
        return faiss.IndexIDMap(inner)

    def _hnsw(self) -> faiss.IndexHNSW:
        inner = faiss.downcast_index(self._index.index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
        return inner

    def _labels(self) -> np.ndarray:
        """Writable view of the graph's id slots (position -> template id, -1 = tombstone)."""
        id_map = self._index.id_map
        return faiss.rev_swig_ptr(id_map.data(), id_map.size())

    @property
    def tombstones(self) -> int:
        """Slots of removed or replaced templates still in the index (``hnsw_sq`` and the 4-bit
        fast-scan IVF kinds; 0 otherwise). A rebuild from the database purges them."""
        if not self._uses_tombstones():
            return 0
        return int(self._index.ntotal) // self._copies() - len(self._members)

    def _copies(self) -> int:
        """Entries each template has in the FAISS index (2 for a trained ivf_pq_refine with spill)."""
        return int(self.params["spill"]) if self._refine is not None else 1

    def _uses_tombstones(self) -> bool:
        # FAISS 1.15's IndexIVFFastScan.remove_ids corrupts later additions to the lists it
        # compacted (vectors added afterwards are mostly not found), so fast-scan lists are
        # never compacted: a removed entry keeps its slot with id -1 and an all-zero code.
        if not self._trained:
            return False
        return self.kind in ("hnsw_sq", "ivf_pq_refine") or (self.kind == "ivf_pq" and self.params["nbits"] == 4)

    def _tombstone_ivf(self, ids: np.ndarray) -> int:
        """Mark ``ids`` dead in a fast-scan IVF: id -1 and the packed code zeroed, so nothing
        derived from the face stays behind (erasure) and searches skip the slot."""
        ivf = faiss.downcast_index(faiss.extract_index_ivf(self._index))
        invlists = faiss.downcast_InvertedLists(ivf.invlists)
        packer = ivf.get_CodePacker()
        zero = np.zeros(packer.code_size, np.uint8)
        ids = np.unique(ids)        # sorted once: a binary search per stored id, not a sort per list
        if not len(ids):
            return 0
        dead = 0
        for list_no in range(ivf.nlist):
            size = invlists.list_size(list_no)
            if not size:
                continue
            list_ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
            hits = np.flatnonzero(_in_sorted(ids, list_ids))
            if not len(hits):
                continue
            blocks = (size + packer.nvec - 1) // packer.nvec
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), blocks * packer.block_size)
            for offset in hits:
                packer.pack_1(zero, int(offset), codes.reshape(blocks, packer.block_size))
            list_ids[hits] = -1
            dead += len(hits)
        return dead

    def _maybe_train(self) -> None:
        if self._trained or self._index.ntotal < self.params["train_size"]:
            return
        n = self._index.ntotal
        sample = self._index.index.reconstruct_n(0, n)
        self.train(sample)

    def _apply_search_params(self) -> None:
        if self.kind == "flat":
            return
        if self.kind == "hnsw_sq":
            self._hnsw().hnsw.efSearch = int(self.params["ef_search"])
            return
        ivf = faiss.extract_index_ivf(self._index)
        ivf.nprobe = min(int(self.params["nprobe"]), ivf.nlist)
        if self.params.get("hnsw_quantizer"):
            hnsw = faiss.downcast_index(ivf.quantizer)
            hnsw.hnsw.efSearch = max(64, 2 * int(self.params["nprobe"]))

    def set_ef_search(self, ef: int) -> None:
        """Change the HNSW search breadth (``hnsw_sq``: speed/recall trade-off)."""
        self.params["ef_search"] = int(ef)
        if self._trained:
            self._apply_search_params()

    def set_nprobe(self, nprobe: int) -> None:
        """Change how many IVF cells a query visits (speed/recall trade-off)."""
        self.params["nprobe"] = int(nprobe)
        if self._trained:
            self._apply_search_params()

    # ----------------------------------------------------------------- membership
    def _contains(self, ids: np.ndarray) -> np.ndarray:
        return _in_sorted(self._members, ids)

    # ----------------------------------------------------------------- mutation
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace vectors (float32 unit vectors) under int64 ``ids``."""
        ids = _as_ids(ids)
        x = _as_vectors(vectors, self.dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if not len(ids):
            return
        # Within one batch the last occurrence of an id wins.
        rev_unique, rev_pos = np.unique(ids[::-1], return_index=True)
        if len(rev_unique) != len(ids):
            keep = np.sort(len(ids) - 1 - rev_pos)
            ids, x = ids[keep], x[keep]
        if self.kind == "ivf_pq_refine" and self._trained:
            self._add_refined(ids, x)
            return
        present = self._contains(ids)
        if present.any():
            self._remove_present(ids[present])
        self._index.add_with_ids(x, ids)
        self._insert_members(ids[~present])
        self._maybe_train()

    def _insert_members(self, new: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Add ids not yet present to the sorted ``_members`` (and, for ivf_pq_refine, their
        refinement rows to ``_slots``, kept in the same order)."""
        order = np.argsort(new, kind="stable")
        new = new[order]
        rows = rows[order] if rows is not None else None
        if not len(new):
            return
        members = np.concatenate([self._members, new])
        slots = np.concatenate([self._slots, rows]) if rows is not None else None
        if len(self._members) and new[0] <= self._members[-1]:
            # two sorted runs: the stable sort (timsort) merges them in linear time
            merged = np.argsort(members, kind="stable")
            members = members[merged]
            slots = slots[merged] if slots is not None else None
        self._members = members                   # (ids usually grow: appended as they are)
        if slots is not None:
            self._slots = slots

    def _add_refined(self, ids: np.ndarray, x: np.ndarray) -> None:
        """``add`` for a trained ivf_pq_refine (``ids`` unique): 8-bit codes in fresh rows and
        fast-scan codes in the IVF, in each of the template's cells, under the row number (a
        search maps rows back to template ids directly instead of a binary search over all
        members per candidate); a replaced id's old row is tombstoned and released."""
        present = self._contains(ids)
        pos = np.searchsorted(self._members, ids[present])
        old_rows = self._slots[pos]
        if len(old_rows):
            self._tombstone_ivf(old_rows)
        projected = self._project(x)                    # projected once for both codes
        rows = self._refine.put(projected, ids)
        self._add_to_cells(self._scan_project(projected), rows, self._assign_cells(projected))
        self._refine.release(old_rows)
        self._slots[pos] = rows[present]
        self._insert_members(ids[~present], rows[~present].astype(np.int32))

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present."""
        ids = np.unique(_as_ids(ids))
        present = ids[self._contains(ids)]
        if not len(present):
            return 0
        pos = np.searchsorted(self._members, present)
        if self._refine is not None:        # trained ivf_pq_refine: the IVF holds row numbers
            rows = self._slots[pos]
            self._tombstone_ivf(rows)           # every copy of each row
            self._refine.release(rows)
            self._slots = np.delete(self._slots, pos)
            removed = len(present)
        else:
            removed = self._remove_present(present)
        self._members = np.delete(self._members, pos)
        return removed

    def _remove_present(self, ids: np.ndarray) -> int:
        """Drop ids known to be present from the FAISS index (not from ``_members``)."""
        if self.kind == "hnsw_sq" and self._trained:
            labels = self._labels()
            dead = np.flatnonzero(np.isin(labels, ids))
            labels[dead] = -1
            return int(len(dead))
        if self._uses_tombstones():
            return self._tombstone_ivf(ids)
        return int(self._index.remove_ids(ids))

    def __len__(self) -> int:
        return int(len(self._members))

    def ids(self) -> np.ndarray:
        """All ids in the index, sorted."""
        return self._members.copy()

    # ----------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int, stop_score: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product (= cosine for unit vectors; approximate for the
        compressed kinds). Returns ``(scores [q,k] float32, ids [q,k] int64)``; missing slots
        have id -1 and score -inf.

        ``stop_score`` (``ivf_pq_refine``, one query at a time): stop early when the nearest
        ``first_probe`` cells already hold a candidate scoring at least this much, instead of
        scanning all ``nprobe`` (see :meth:`_search_refined`). Other kinds ignore it."""
        q = _as_vectors(queries, self.dim)
        k = int(k)
        if k <= 0 or not len(q):
            return (np.empty((len(q), max(k, 0)), np.float32), np.empty((len(q), max(k, 0)), np.int64))
        if self._index.ntotal == 0:
            return (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
        if self.kind == "hnsw_sq" and self._trained:
            return self._search_hnsw(q, k)
        if self.kind == "ivf_pq_refine" and self._trained:
            return self._search_refined(q, k, stop_score)
        params = self._live_only(faiss.extract_index_ivf(self._index).nprobe) if self._uses_tombstones() else None
        scores, ids = self._index.search(q, k, params=params)
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _live_only(self, nprobe: int) -> faiss.SearchParametersIVF | None:
        """IVF search parameters that skip tombstones (id -1), or None when there are none.
        A tombstone's all-zero code can outscore every live entry for some queries, so
        fetching proportionally more candidates is not enough."""
        if not self.tombstones:
            return None
        return faiss.SearchParametersIVF(sel=_LIVE_IDS, nprobe=int(nprobe))

    def _with_tombstone_margin(self, k: int) -> int:
        """HNSW tombstones take result slots: ask for proportionally more."""
        dead = self.tombstones
        if not dead:
            return k
        stored = len(self._members) + dead
        return min(int(math.ceil(k * stored / max(len(self._members), 1))) + 8, stored)

    def _search_hnsw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        fetch = self._with_tombstone_margin(max(k, HNSW_MIN_CANDIDATES))
        hnsw = self._hnsw().hnsw
        ef = hnsw.efSearch
        hnsw.efSearch = max(ef, fetch)
        try:
            scores, ids = self._index.search(q, fetch)
        finally:
            hnsw.efSearch = ef
        return _first_live(scores, ids, k)

    def _search_refined(self, q: np.ndarray, k: int, stop_score: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from the fast-scan IVF, rescored with the 8-bit codes of the projection.

        With ``stop_score``, a single query is searched in two stages over its cells in
        coarse order: the nearest ``first_probe`` cells first; if a rescored candidate reaches
        ``stop_score`` the search ends there, otherwise the remaining cells up to ``nprobe``
        are scanned and both stages' candidates are rescored together (half the shortlist
        is kept from the nearest cells, on top of the second stage's: at least the recall of
        a one-stage search, in benchmarks/results/index_scale.md). A face enrolled under a
        good photo usually lies in the nearest cells (benchmarks/results/index_scale.md: at
        10M, 75 % of mated queries stop after 128 of 8,192 cells at a score of 0.6), while
        a face that is not enrolled, or only poorly, is searched to full depth."""
        projected = self._project(q)
        scan = self._scan_project(projected)
        ivf = self._ivf_fast_scan()
        ivf.implem = 0
        shortlist = min(max(int(self.params["shortlist"]), k), len(self))
        nprobe = ivf.nprobe
        first = self._first_probe(ivf)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        if len(q) != 1:
            _, cand = ivf.search(scan, shortlist, params=self._live_only(nprobe))
            for row in range(len(q)):
                rows = np.unique(cand[row][cand[row] >= 0])     # a template's two cells: twice
                self._keep_best(rows, self._refine.scores(rows, projected[row]), k, out_s[row], out_i[row])
            return out_s, out_i
        cells, cell_scores = _nearest_cells(ivf, scan[0], nprobe, first)
        if stop_score is None or first >= nprobe:
            rows = self._scan_cells(ivf, scan, cells, cell_scores, shortlist)
            self._keep_best(rows, self._refine.scores(rows, projected[0]), k, out_s[0], out_i[0])
            return out_s, out_i
        rows = self._scan_cells(ivf, scan, cells[:, :first], cell_scores[:, :first], max(k, shortlist // 2))
        scores = self._refine.scores(rows, projected[0])
        self._staged["searches"] += 1
        if len(scores) and scores.max() >= stop_score:
            self._staged["stopped_early"] += 1
        else:       # with spill, a row of the second stage's cells may be in the first's too
            more = self._scan_cells(ivf, scan, cells[:, first:], cell_scores[:, first:], shortlist)
            more = more[~np.isin(more, rows, assume_unique=True)]
            rows = np.concatenate([rows, more])
            scores = np.concatenate([scores, self._refine.scores(more, projected[0])])
        self._keep_best(rows, scores, k, out_s[0], out_i[0])
        return out_s, out_i

    def _first_probe(self, ivf) -> int:
        first = int(self.params.get("first_probe", 0))
        if first <= 0:
            first = max(16, ivf.nlist // 64)
        return min(first, ivf.nprobe)

    def _scan_cells(self, ivf, scan: np.ndarray, cells: np.ndarray, cell_scores: np.ndarray, shortlist: int) -> np.ndarray:
        """Refinement rows (unique) of the best ``shortlist`` candidates in the given cells (one
        query).

        The cells are dealt out to ``scan_parts`` copies of the query (0: one per FAISS
        thread), which FAISS's per-query implementation (10) scans in parallel, one thread
        each; the best ``shortlist`` of their candidates are kept, the same set one search
        over all the cells finds. At 10M on 2 cores this took 1-15 % less time than FAISS's
        implementation that spreads one query's cells over its threads (14; ``scan_parts=1``)
        in benchmarks/results/index_scale.md."""
        parts = int(self.params.get("scan_parts", 0)) or faiss.omp_get_max_threads()
        parts = max(1, min(parts, cells.shape[1]))
        width = -(-cells.shape[1] // parts)
        padded = np.full((parts * width,), -1, np.int64)     # -1: no cell
        padded[:cells.shape[1]] = cells[0]
        padded_scores = np.zeros(parts * width, np.float32)
        padded_scores[:cells.shape[1]] = cell_scores[0]
        nprobe, implem = ivf.nprobe, ivf.implem
        ivf.nprobe = width      # search_preassigned takes its width from nprobe
        ivf.implem = 10 if parts > 1 else 14
        copies = np.ascontiguousarray(np.repeat(scan, parts, axis=0), dtype=np.float32)
        part_cells = np.ascontiguousarray(padded.reshape(width, parts).T)
        part_scores = np.ascontiguousarray(padded_scores.reshape(width, parts).T)
        dist = np.empty((parts, shortlist), np.float32)
        cand = np.empty((parts, shortlist), np.int64)
        ptr = faiss.swig_ptr
        try:    # part j scans cells j, j + parts, ...: parts of equal size, near and far cells mixed
            # (the C++ call: FAISS's Python wrapper of search_preassigned takes no parameters)
            ivf.search_preassigned_c(parts, ptr(copies), shortlist, ptr(part_cells), ptr(part_scores),
                                     ptr(dist), ptr(cand), False, self._live_only(width))
        finally:
            ivf.nprobe, ivf.implem = nprobe, implem
        dist, cand = dist.ravel(), cand.ravel()
        found = cand >= 0
        dist, cand = dist[found], cand[found]
        if parts > 1 and len(cand) > shortlist:
            cand = cand[np.argpartition(-dist, shortlist - 1)[:shortlist]]
        return np.unique(cand)

    def _keep_best(self, rows: np.ndarray, scores: np.ndarray, k: int, out_s: np.ndarray, out_i: np.ndarray) -> None:
        best = np.argsort(-scores, kind="stable")[:k]
        out_s[:len(best)], out_i[:len(best)] = scores[best], self._refine.owner[rows[best]]

    # ----------------------------------------------------------------- persistence
    def save(self, path, applied_seq: int) -> None:
        """Write a snapshot atomically: a temporary file beside ``path`` is written, fsynced and
        renamed over it, so a crash leaves either the old snapshot or the new one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({
            "format": SNAPSHOT_FORMAT, "dim": self.dim, "kind": self.kind, "params": self.params,
            "trained": self._trained, "applied_seq": int(applied_seq), "ntotal": len(self),
            "faiss_version": faiss.__version__,
            **({"refine_rows": self._refine.used} if self._refine is not None else {}),
        }).encode()
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(_MAGIC + struct.pack("<Q", len(header)) + header)
                faiss.write_index(self._index, faiss.PyCallbackIOWriter(f.write))
                if self._refine is not None:    # codec, cells, rows, then each row's template id (-1: free)
                    faiss.write_index(self._refine.codec, faiss.PyCallbackIOWriter(f.write))
                    faiss.write_index(self._cells, faiss.PyCallbackIOWriter(f.write))
                    used = self._refine.used
                    f.write(memoryview(np.ascontiguousarray(self._refine.codes[:used])).cast("B"))
                    f.write(memoryview(np.ascontiguousarray(self._refine.owner[:used], dtype="<i8")).cast("B"))
                f.write(_MAGIC)   # trailer: a truncated file is detected on load
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path) -> tuple["VectorIndex", int]:
        """Read a snapshot written by :meth:`save`; returns ``(index, applied_seq)``.
        Raises :class:`SnapshotError` when the file is missing or damaged."""
        path = Path(path)
        try:
            f = open(path, "rb")
        except FileNotFoundError as exc:
            raise SnapshotError(f"no index snapshot at {path}") from exc
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(len(_MAGIC) + 8)
            if len(head) < len(_MAGIC) + 8 or head[:len(_MAGIC)] != _MAGIC:
                raise SnapshotError(f"{path} is not a facegate index snapshot")
            (hlen,) = struct.unpack("<Q", head[len(_MAGIC):])
            try:
                meta = json.loads(f.read(hlen))
            except ValueError as exc:
                raise SnapshotError(f"{path}: damaged header") from exc
            if meta.get("kind") == "ivf_pq_refine" and meta.get("format", 1) < 3:
                raise SnapshotError(f"{path}: an ivf_pq_refine snapshot of format {meta.get('format', 1)}, from "
                                    "before its cells moved to the PCA space (format 3); rebuild the index "
                                    "from the database")
            f.seek(size - len(_MAGIC))
            if f.read(len(_MAGIC)) != _MAGIC:
                raise SnapshotError(f"{path} is truncated")
            f.seek(len(_MAGIC) + 8 + hlen)
            body_len = size - len(_MAGIC) * 2 - 8 - hlen
            reader = _BoundedReader(f, body_len)
            try:
                index = faiss.read_index(faiss.PyCallbackIOReader(reader.read))
                refine = None
                if "refine_rows" in meta:
                    codec = faiss.read_index(faiss.PyCallbackIOReader(reader.read))
                    cells = faiss.read_index(faiss.PyCallbackIOReader(reader.read))
                    refine = _RefineCodes(codec)
                    used = int(meta["refine_rows"])
                    refine.load_rows(_read_array(reader, np.uint8, used * codec.code_size, path),
                                     _read_array(reader, np.dtype("<i8"), used, path).astype(np.int64, copy=False))
            except RuntimeError as exc:
                raise SnapshotError(f"{path}: damaged index body: {exc}") from exc
        self = cls.__new__(cls)
        self._reset_counters()
        self.dim = int(meta["dim"])
        self.kind = meta["kind"]
        self.params = {**_DEFAULTS[self.kind], **meta["params"]}   # parameters added since keep their defaults
        self._trained = bool(meta["trained"])
        self._index = index
        stored_ids = _index_ids(index)
        if self._uses_tombstones():
            stored_ids = stored_ids[stored_ids >= 0]     # tombstones
        self._refine, self._slots, self._cells = refine, np.empty(0, np.int32), None
        if refine is not None:       # the IVF holds row numbers; each row's owner is its template
            self._cells = cells
            rows = np.flatnonzero(refine.owner[:refine.used] >= 0)
            if not np.array_equal(np.sort(stored_ids), np.repeat(rows, self._copies())):
                raise SnapshotError(f"{path}: refinement rows do not match the index")
            order = np.argsort(refine.owner[rows], kind="stable")
            stored_ids, self._slots = refine.owner[rows][order], rows[order].astype(np.int32)
        self._members = np.sort(stored_ids)
        if not self._uses_tombstones() and len(self._members) != index.ntotal:
            raise SnapshotError(f"{path}: id list does not match the vector count")
        if len(np.unique(self._members)) != len(self._members):
            raise SnapshotError(f"{path}: an id is stored twice")
        if self._trained:
            self._apply_search_params()
        return self, int(meta["applied_seq"])

    # ----------------------------------------------------------------- introspection
    def stats(self) -> dict:
        """Kind, size, estimated memory and parameters."""
        return {
            "kind": self.kind,
            "ntotal": len(self),
            "bytes": self.memory_bytes(),
            "bytes_per_vector": round(self.memory_bytes() / len(self), 1) if len(self) else None,
            "trained": self._trained,
            "tombstones": self.tombstones,
            "factory": self.factory_string(),
            "params": dict(self.params),
            **({"staged_searches": dict(self._staged)} if self.kind == "ivf_pq_refine" else {}),
        }

    def memory_bytes(self) -> int:
        """Estimated resident bytes: vectors/codes, ids, coarse quantizer, transforms and the
        sorted id list this class keeps for upserts."""
        n = len(self)
        total = self._members.nbytes
        if not self._trained or self.kind == "flat":
            return total + n * (self.dim * 4 + 8)
        if self.kind == "hnsw_sq":
            stored = int(self._index.ntotal)      # tombstones included
            hnsw_index = self._hnsw()
            graph = hnsw_index.hnsw
            total += stored * 8                                     # FAISS id slots
            total += stored * faiss.downcast_index(hnsw_index.storage).code_size
            total += graph.neighbors.size() * 4 + graph.offsets.size() * 8 + graph.levels.size() * 4
            if isinstance(faiss.downcast_index(self._index.index), faiss.IndexPreTransform):
                total += self.dim * int(self.params["pca"] or self.dim) * 4
            return int(total)
        ivf = faiss.extract_index_ivf(self._index)
        total += int(ivf.ntotal) * (ivf.code_size + 8)       # spill copies and tombstones included
        total += ivf.nlist * ivf.d * 4
        if self.params.get("hnsw_quantizer"):
            total += ivf.nlist * 32 * 2 * 4 + ivf.nlist * 8
        if isinstance(self._index, faiss.IndexPreTransform):
            for i in range(self._index.chain.size()):
                transform = self._index.chain.at(i)
                total += transform.d_in * transform.d_out * 4
        if self._refine is not None:
            total += self._slots.nbytes + self._refine.codes.shape[0] * (self._refine.codec.d + 8)
            total += self._cells.ntotal * self._cells.d * 4
        return int(total)


_LIVE_IDS = faiss.IDSelectorRange(0, 2**63 - 1)     # every id but tombstones (-1)


def _first_live(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` results of each row that are not tombstones or empty slots (id -1)."""
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for row in range(len(ids)):
        live = ids[row] >= 0
        s, i = scores[row][live][:k], ids[row][live][:k]
        out_s[row, :len(s)], out_i[row, :len(i)] = s, i
    return out_s, out_i


class _RefineCodes:
    """8-bit scalar-quantised copies of projected templates (ivf_pq_refine's second stage), one
    row each; rows of removed templates are reused. ``codec`` is a trained, empty
    ``IndexScalarQuantizer`` used only to encode and decode."""

    def __init__(self, codec: faiss.IndexScalarQuantizer):
        self.codec = codec
        self.codes = np.empty((0, codec.code_size), dtype=np.uint8)
        self.owner = np.empty(0, dtype=np.int64)        # template id of each row, -1 = free
        self.used = 0                                   # rows handed out so far
        self.free = np.empty(0, dtype=np.int64)         # released rows, reused first

    def put(self, projected: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Encode vectors into rows owned by ``ids``; returns the row of each."""
        n = len(projected)
        if self.used + n - min(n, len(self.free)) >= 2**31:     # rows are kept as int32
            raise ValueError("ivf_pq_refine holds at most 2**31 - 1 refinement rows")
        reuse, self.free = self.free[:n], self.free[n:]
        fresh = np.arange(self.used, self.used + n - len(reuse), dtype=np.int64)
        self.used += len(fresh)
        if self.used > len(self.codes):        # grow by 1/8: amortised appends, little slack
            size = max(self.used, len(self.codes) * (REFINE_GROWTH + 1) // REFINE_GROWTH, 1024)
            grown = np.empty((size, self.codes.shape[1]), np.uint8)
            grown[:len(self.codes)] = self.codes
            owner = np.full(size, -1, np.int64)
            owner[:len(self.owner)] = self.owner
            self.codes, self.owner = grown, owner
        rows = np.concatenate([reuse, fresh])
        self.codes[rows] = self.codec.sa_encode(np.ascontiguousarray(projected, dtype=np.float32))
        self.owner[rows] = ids
        return rows

    def release(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self.codes[rows] = 0            # erased means erased: no code of a removed face is kept
        self.owner[rows] = -1
        self.free = np.concatenate([self.free, rows])

    def scores(self, rows: np.ndarray, projected_query: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: a multi-threaded OpenBLAS gemv leaves its threads spinning on the
        # cores FAISS's scan of the next stage needs.
        return np.einsum("ij,j->i", self.codec.sa_decode(self.codes[rows]), projected_query)

    def load_rows(self, flat: np.ndarray, owner: np.ndarray) -> None:
        self.codes = flat.reshape(-1, self.codec.code_size)
        self.owner = owner.copy()
        self.used = len(self.codes)
        self.free = np.flatnonzero(self.owner < 0).astype(np.int64)


def _nearest_cells(ivf, query: np.ndarray, nprobe: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``nprobe`` cells nearest to one query (``[1, nprobe]`` ids and scores), the ``first``
    nearest ahead of the others, in no order within each group (the order of the cells does
    not change what a scan finds). FAISS's own top-``nprobe`` keeps a heap of that size: ~0.6 ms
    a query at 2,560 of 8,192 cells, against ~0.1 ms for all the inner products and a partition."""
    centroids = faiss.downcast_index(ivf.quantizer)
    scores = np.empty(ivf.nlist, np.float32)
    query = np.ascontiguousarray(query, dtype=np.float32)
    faiss.fvec_inner_products_ny(faiss.swig_ptr(scores), faiss.swig_ptr(query), centroids.get_xb(), ivf.d, ivf.nlist)
    cells = np.argpartition(-scores, sorted({first - 1, nprobe - 1}))[:nprobe]
    return cells[None].astype(np.int64), scores[cells][None]


def _rotated_leading_axes(d_in: int, d_out: int) -> faiss.LinearTransform:
    """y = R z[:d_out]: the first ``d_out`` (highest-variance) PCA axes, turned by a fixed random
    rotation R so that every 2-D sub-space the PQ codes quantise carries the same variance
    (without it the first sub-quantisers get most of the energy and rank coarsely)."""
    rotation = np.linalg.qr(np.random.default_rng(REFINE_ROTATION_SEED).standard_normal((d_out, d_out)))[0]
    matrix = np.zeros((d_out, d_in), np.float32)
    matrix[:, :d_out] = rotation.T
    transform = faiss.LinearTransform(d_in, d_out, False)
    faiss.copy_array_to_vector(matrix.ravel(), transform.A)
    transform.is_trained = True
    return transform


def _energy_lost(sample: np.ndarray) -> np.ndarray:
    """``lost[i]``: the share of the sample's energy outside its first ``i + 1`` principal axes
    (uncentred projection)."""
    x = np.asarray(sample[:200_000], dtype=np.float64)
    eig = np.linalg.eigvalsh(x.T @ x)[::-1]
    return 1.0 - np.cumsum(eig) / eig.sum()


def _dims_keeping(lost: np.ndarray, max_loss: float, multiple: int) -> int:
    """The fewest leading axes, a multiple of ``multiple`` (capped at the dimension), that keep
    all but ``max_loss`` of the energy (``lost`` from :func:`_energy_lost`)."""
    need = int(np.argmax(lost <= max_loss)) + 1
    return min(multiple * math.ceil(need / multiple), len(lost))


def _leading_dims(sample: np.ndarray, max_loss: float, multiple: int) -> int:
    """:func:`_dims_keeping` for one sample."""
    return _dims_keeping(_energy_lost(sample), max_loss, multiple)


def _in_sorted(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Which of ``x`` are in ``sorted_values`` (sorted, unique), by binary search."""
    if not len(sorted_values):
        return np.zeros(len(x), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, x), len(sorted_values) - 1)
    return sorted_values[pos] == x


def _centroids(index: faiss.IndexFlat) -> np.ndarray:
    """The vectors of a flat index (cell centroids), as a read-only view."""
    view = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    view.flags.writeable = False
    return view


def _read_array(reader: "_BoundedReader", dtype, count: int, path) -> np.ndarray:
    out = np.empty(count, dtype=dtype)
    if reader.read_into(memoryview(out).cast("B")) != out.nbytes:
        raise SnapshotError(f"{path}: truncated refinement section")
    return out


class _BoundedReader:
    """A file reader for FAISS that stops at the end of the index body (before the trailer)."""

    def __init__(self, f: io.BufferedReader, length: int):
        self.f = f
        self.left = length

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def read_into(self, buf: memoryview) -> int:
        """Fill ``buf`` (no intermediate copy); returns the bytes read."""
        want = min(len(buf), self.left)
        got = 0
        while got < want:
            n = self.f.readinto(buf[got:want])
            if not n:
                break
            got += n
        self.left -= got
        return got


def _index_ids(index: faiss.Index) -> np.ndarray:
    """Every id stored in a flat IDMap2 or (pre-transformed) IVF index."""
    if isinstance(index, faiss.IndexIDMap2) or hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    out = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            ptr = invlists.get_ids(list_no)
            out.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(list_no, ptr)
    return np.concatenate(out).astype(np.int64) if out else np.empty(0, np.int64)
