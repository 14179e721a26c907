"""``ivf_pq_refine``: two stages, for large galleries (the default above ``FLAT_MAX``).

(1) Candidates: an uncentred PCA to ``pca`` dimensions (0 = chosen from the training sample:
the smallest multiple of 16 that keeps all but ``PCA_MAX_ENERGY_LOSS`` of the energy; face
embeddings span far fewer dimensions than they have). Its leading ``scan_dims`` axes (0 = the
fewest, a multiple of 8, holding ``SCAN_ENERGY`` of the energy) are turned by a fixed random
rotation, so that each of the ``m`` 4-bit PQ sub-quantisers (0 = ``scan_dims`` / 2: two
dimensions each) gets an equal share of the variance, and those fast-scan codes are kept in an
inverted file of ``nlist`` cells. The cells are k-means cells of the whole projection; with
``spill`` 2 (the default) every template is stored in two of them, its nearest and a second
one chosen by SOAR's rule (:meth:`RefineStore._assign_cells`), so that a query finds it in
fewer cells. A query's ``nprobe`` nearest cells (ranked by the centroids' scanned axes) are
scanned and the best ``shortlist`` candidates kept. (2) Refinement: every template also keeps
an 8-bit scalar-quantised copy of its projection (``pca`` bytes); the shortlist is rescored
with those (close to exact cosine) and the best ``k`` returned. About ``pca`` + 8 + ``spill``
* (m/2 + 8) + 12 bytes per template, plus up to 1/``REFINE_GROWTH`` of ``pca`` + 8 of growth
slack. The refinement codes live in rows reused after removal; the IVF stores row numbers as
its ids and each row records its template id, so candidates map to templates without a search.

A single query with a ``stop_score`` is searched in two stages, ending after the nearest cells
when they hold a strong enough candidate (:meth:`RefineStore.search`); its cells are split
between ``scan_parts`` copies of it scanned in parallel (:meth:`RefineStore._scan_cells`).
Embeddings that fill all dimensions (nothing projected away) need a longer shortlist: 4-bit
codes of full 512-D vectors rank coarsely.

Figures, in benchmarks/results/index_scale.md: recall, latency and bytes per template of the
defaults at 1M and 10M, and without the spill, section "Cells of the projection, SOAR spill
(session 6)"; the projection and the refinement codec, section "Two-stage `ivf_pq_refine`
(session 2)", "Why this design"; the rotated axes, section "Rotated leading axes (session 3)".
"""
from __future__ import annotations

import faiss
import numpy as np

from .flat_ivf import KMEANS_ITERATIONS, IvfStore
from .projection import _centroids, _dims_keeping, _energy_lost, _rotated_leading_axes
from .snapshot import Body, SnapshotError, Writer
from .tombstones import in_sorted, merge_sorted, tombstone_fast_scan

PCA_MAX_ENERGY_LOSS = 1e-4      # pca=0: energy the projection may drop
SCAN_ENERGY = 0.97              # scan_dims=0: energy the scanned leading axes keep
SOAR_CANDIDATES = 32            # spill=2: nearest cells the second cell is chosen from
REFINE_GROWTH = 8               # the refinement rows grow by 1/8 when full: amortised appends, little slack


class RefineStore(IvfStore):
    """The fast-scan IVF of the scanned axes (ids: refinement rows), the refinement codes, the
    cells of the projection, and each member's row (``_slots``, in ``_members``' order)."""

    KIND = "ivf_pq_refine"
    uses_tombstones = True
    searches_in_stages = True

    def __init__(self, dim: int, params: dict, index: faiss.Index, refine: "_RefineCodes", cells: faiss.IndexFlatIP):
        self._refine = refine       # 8-bit copies of the projection, in rows
        self._cells = cells         # cell centroids in the PCA space
        self._slots = np.empty(0, dtype=np.int32)
        super().__init__(dim, params, index)

    @property
    def copies(self) -> int:
        return int(self.params["spill"])

    # ----------------------------------------------------------------- training
    @classmethod
    def train(cls, dim: int, params: dict, sample: np.ndarray) -> "RefineStore":
        p = params
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
        pca = faiss.PCAMatrix(dim, d)
        pca.train(sample)
        faiss.copy_array_to_vector(np.zeros(d, np.float32), pca.b)   # x -> A x keeps inner products
        projected = pca.apply(sample)
        # The cells are regions of the whole projection, not of the scanned axes: SOAR's second
        # cell needs the residual to the first, which the scanned axes only partly hold (at equal
        # recall the spill saved less time with cells of the scanned axes: section "Cells of the
        # projection, SOAR spill (session 6)", "How the design was chosen").
        cells = faiss.IndexFlatIP(d)
        clustering = faiss.Clustering(d, int(p["nlist"]))
        clustering.niter = KMEANS_ITERATIONS
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
        index = faiss.IndexPreTransform(scan, ivf)     # x -> PCA -> leading axes rotated -> IVF
        index.prepend_transform(pca)
        return cls(dim, params, index, _RefineCodes(codec), cells)

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

    # ----------------------------------------------------------------- mutation
    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """8-bit codes in fresh rows and fast-scan codes in the IVF, in each of the template's
        cells, under the row number; a replaced id's old row is tombstoned and released."""
        present = in_sorted(self._members, ids)
        pos = np.searchsorted(self._members, ids[present])
        old_rows = self._slots[pos]
        if len(old_rows):
            tombstone_fast_scan(self._index, old_rows)
        projected = self._project(x)                    # projected once for both codes
        rows = self._refine.put(projected, ids)
        self._add_to_cells(self._scan_project(projected), rows, self._assign_cells(projected))
        self._refine.release(old_rows)
        self._slots[pos] = rows[present]
        self._members, self._slots = merge_sorted(self._members, ids[~present], self._slots,
                                                  rows[~present].astype(np.int32))

    def _drop(self, ids: np.ndarray) -> int:
        """Tombstone every copy of the ids' rows and release the rows (and their ``_slots``
        entries: :meth:`remove` then drops the ids from ``_members``, which stays aligned)."""
        pos = np.searchsorted(self._members, ids)
        rows = self._slots[pos]
        tombstone_fast_scan(self._index, rows)
        self._refine.release(rows)
        self._slots = np.delete(self._slots, pos)
        return len(ids)

    # ----------------------------------------------------------------- search
    def search(self, q: np.ndarray, k: int, stop_score: float | None) -> tuple[np.ndarray, np.ndarray, bool | None]:
        """Candidates from the fast-scan IVF, rescored with the 8-bit codes of the projection.

        With ``stop_score``, a single query is searched in two stages over its cells in
        coarse order: the nearest ``first_probe`` cells (0 = 1/64 of ``nlist``, at least 16)
        first; if a rescored candidate reaches ``stop_score`` the search ends there, otherwise
        the remaining cells up to ``nprobe`` are scanned and both stages' candidates are
        rescored together (half the shortlist is kept from the nearest cells, on top of the
        second stage's: at least the recall of a one-stage search). A face enrolled under a
        good photo usually lies in the nearest cells, while a face that is not enrolled, or
        only poorly, is searched to full depth (how many stop, and how much sooner: section
        "Early stop (session 4)" and, for the defaults, "Cells of the projection, SOAR spill
        (session 6)" of benchmarks/results/index_scale.md)."""
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
            return out_s, out_i, None
        cells, cell_scores = _nearest_cells(ivf, scan[0], nprobe, first)
        if stop_score is None or first >= nprobe:
            rows = self._scan_cells(ivf, scan, cells, cell_scores, shortlist)
            self._keep_best(rows, self._refine.scores(rows, projected[0]), k, out_s[0], out_i[0])
            return out_s, out_i, None
        rows = self._scan_cells(ivf, scan, cells[:, :first], cell_scores[:, :first], max(k, shortlist // 2))
        scores = self._refine.scores(rows, projected[0])
        stopped = bool(len(scores) and scores.max() >= stop_score)
        if not stopped:     # with spill, a row of the second stage's cells may be in the first's too
            more = self._scan_cells(ivf, scan, cells[:, first:], cell_scores[:, first:], shortlist)
            more = more[~np.isin(more, rows, assume_unique=True)]
            rows = np.concatenate([rows, more])
            scores = np.concatenate([scores, self._refine.scores(more, projected[0])])
        self._keep_best(rows, scores, k, out_s[0], out_i[0])
        return out_s, out_i, stopped

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
        over all the cells finds. It took less time than FAISS's implementation that spreads
        one query's cells over its threads (14; ``scan_parts=1``): section "Scan split over
        threads (session 5)" of benchmarks/results/index_scale.md."""
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

    # ----------------------------------------------------------------- size and snapshots
    def _index_bytes(self) -> int:
        refine = self._refine
        return (super()._index_bytes() + self._slots.nbytes + refine.codes.shape[0] * (refine.codec.d + 8)
                + self._cells.ntotal * self._cells.d * 4)

    def header(self) -> dict:
        return {"refine_rows": self._refine.used}

    def write(self, out: Writer) -> None:
        """The IVF, then the codec, the cells, the rows' codes and each row's template id (-1: free)."""
        super().write(out)
        out.index(self._refine.codec)
        out.index(self._cells)
        used = self._refine.used
        out.array(self._refine.codes[:used])
        out.array(self._refine.owner[:used], "<i8")

    @classmethod
    def _read_body(cls, dim: int, params: dict, meta: dict, body: Body) -> "RefineStore":
        index, codec, cells = body.index(), body.index(), body.index()
        refine = _RefineCodes(codec)
        used = int(meta["refine_rows"])
        refine.load_rows(body.array(np.uint8, used * codec.code_size),
                         body.array(np.dtype("<i8"), used).astype(np.int64, copy=False))
        return cls(dim, params, index, refine, cells)

    def _stored_ids(self, path) -> np.ndarray:
        """The IVF holds row numbers; each live row's owner is its template. Sets ``_slots``."""
        stored_rows = super()._stored_ids(path)
        owner = self._refine.owner
        rows = np.flatnonzero(owner[:self._refine.used] >= 0)
        if not np.array_equal(np.sort(stored_rows), np.repeat(rows, self.copies)):
            raise SnapshotError(f"{path}: refinement rows do not match the index")
        order = np.argsort(owner[rows], kind="stable")
        self._slots = rows[order].astype(np.int32)
        return owner[rows][order]


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
        if self.used > len(self.codes):
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
    not change what a scan finds). FAISS's own top-``nprobe`` keeps a heap of that size, several
    times slower than all the inner products and a partition (section "Early stop (session 4)"
    of benchmarks/results/index_scale.md)."""
    centroids = faiss.downcast_index(ivf.quantizer)
    scores = np.empty(ivf.nlist, np.float32)
    query = np.ascontiguousarray(query, dtype=np.float32)
    faiss.fvec_inner_products_ny(faiss.swig_ptr(scores), faiss.swig_ptr(query), centroids.get_xb(), ivf.d, ivf.nlist)
    cells = np.argpartition(-scores, sorted({first - 1, nprobe - 1}))[:nprobe]
    return cells[None].astype(np.int64), scores[cells][None]
