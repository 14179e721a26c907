"""``hnsw_sq``: a graph index.

A PCA to ``pca`` dimensions (projection only, no centring, so inner products are preserved in
the kept subspace), then ``IndexHNSWSQ`` (8-bit scalar quantiser, ``m`` links per node, ``2*m``
on level 0) with ``ef_construction``/``ef_search``: about ``pca`` bytes of codes, ``2*m`` 4-byte
level-0 links and an 8-byte id per template (see ``VectorIndex.memory_bytes``). Each search
explores at least ``HNSW_MIN_CANDIDATES`` and returns the best ``k`` by approximate score;
callers rescore them with the exact templates. HNSW cannot delete: removed or replaced
templates become tombstones (tombstones.py); they still cost memory and graph work until the
index is rebuilt from the database, which purges them. ``normalize=True`` re-normalises after
the PCA (cosine in the projected space).

Not chosen by ``VectorIndex.for_size``: within the memory budget its recall falls with the
gallery's size, well under the 0.99 goal at 1M (section "Graph index `hnsw_sq`", Findings, of
benchmarks/results/index_scale.md).
"""
from __future__ import annotations

import faiss
import numpy as np

from .flat_ivf import FlatStore
from .tombstones import first_live, tombstone_graph, with_margin

HNSW_MIN_CANDIDATES = 50    # candidates a search explores however small k: the callers' rescoring
                            # can only recover mates that are among them


class HnswStore(FlatStore):
    KIND = "hnsw_sq"
    uses_tombstones = True

    @classmethod
    def train(cls, dim: int, params: dict, sample: np.ndarray) -> "HnswStore":
        p = params
        dout = int(p["pca"]) or dim
        hnsw = faiss.IndexHNSWSQ(dout, faiss.ScalarQuantizer.QT_8bit, int(p["m"]), faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(p["ef_construction"])
        if dout == dim:
            inner: faiss.Index = hnsw
        else:
            pca = faiss.PCAMatrix(dim, dout)
            pca.train(sample)
            # Drop the centring: x -> A x keeps <x, y> ~ <Ax, Ay>; A(x - mean) would not.
            faiss.copy_array_to_vector(np.zeros(dout, np.float32), pca.b)
            if p.get("normalize"):     # cosine in the projected space (a proper metric for the graph)
                inner = faiss.IndexPreTransform(faiss.NormalizationTransform(dout, 2.0), hnsw)
                inner.prepend_transform(pca)
            else:
                inner = faiss.IndexPreTransform(pca, hnsw)
        inner.train(sample)        # the SQ ranges, on the projected sample
        return cls(dim, params, faiss.IndexIDMap(inner))

    def _hnsw(self) -> faiss.IndexHNSW:
        inner = faiss.downcast_index(self._index.index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
        return inner

    def apply_search_params(self) -> None:
        self._hnsw().hnsw.efSearch = int(self.params["ef_search"])

    def _drop(self, ids: np.ndarray) -> int:
        return tombstone_graph(self._index, ids)

    def search(self, q: np.ndarray, k: int, stop_score: float | None) -> tuple[np.ndarray, np.ndarray, None]:
        fetch = with_margin(max(k, HNSW_MIN_CANDIDATES), len(self), self.tombstones)
        hnsw = self._hnsw().hnsw
        ef = hnsw.efSearch
        hnsw.efSearch = max(ef, fetch)
        try:
            scores, ids = self._index.search(q, fetch)
        finally:
            hnsw.efSearch = ef
        return (*first_live(scores, ids, k), None)

    def _index_bytes(self) -> int:
        stored = self.stored      # tombstones included
        hnsw_index = self._hnsw()
        graph = hnsw_index.hnsw
        total = stored * 8                                      # FAISS id slots
        total += stored * faiss.downcast_index(hnsw_index.storage).code_size
        total += graph.neighbors.size() * 4 + graph.offsets.size() * 8 + graph.levels.size() * 4
        if isinstance(faiss.downcast_index(self._index.index), faiss.IndexPreTransform):
            total += self.dim * int(self.params["pca"] or self.dim) * 4
        return total
