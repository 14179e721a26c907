"""The stores behind :class:`~facegate.gallery.vectors.VectorIndex`: the exact ``flat`` kind (the
base every store extends, and every kind's staging before it is trained) and the kinds built
from a FAISS factory string, ``ivf_sq`` and ``ivf_pq``.

``flat``
    Exact inner-product search over the raw float32 vectors (``IndexIDMap2(IndexFlatIP)``):
    ``dim * 4 + 8`` bytes per template.
``ivf_sq``
    Inverted file (``nlist`` k-means cells, ``nprobe`` visited per query) with scalar-quantised
    vectors (``qtype`` ``SQ8`` = 1 byte per dimension, ``SQ4``, ``SQfp16``), optionally after a
    PCA to ``pca`` dimensions. SQ8 scores are close to exact cosine.
``ivf_pq``
    Inverted file over product-quantised codes (``m`` sub-quantisers of ``nbits`` bits; 4 bits
    uses FAISS's SIMD "fast-scan" kernels), after an OPQ rotation (``opq=True``) that spreads the
    variance evenly over the sub-quantisers. Scores are approximate cosine: 4-bit PQ scores are
    biased low on this embedder and mis-rank mates (section "1:N index at scale (issue 3)",
    Findings 2, of benchmarks/results/index_scale.md), so callers must rescore the top-k
    candidates with the exact stored templates before applying a threshold, and this kind does
    not meet the 0.99 recall goal; prefer ``ivf_sq`` where memory allows.

A store owns the FAISS index and the sorted list of the template ids in it (``_members``: an
upsert must know whether an id is already present, and FAISS cannot say cheaply).
"""
from __future__ import annotations

import faiss
import numpy as np

from .policy import factory_string
from .snapshot import Body, SnapshotError, Writer
from .tombstones import in_sorted, live_only, merge_sorted, tombstone_fast_scan

_CHUNK = 65536      # staged vectors moved per call when an index trains: bounded extra memory
KMEANS_ITERATIONS = 10      # enough for IVF cells; FAISS's default 25 costs 2.5x the training


def flat_index(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def index_ids(index: faiss.Index) -> np.ndarray:
    """Every id stored in an IDMap (flat, graph) or (pre-transformed) IVF index, tombstones
    included."""
    if hasattr(index, "id_map"):
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


class FlatStore:
    """Exact search, keyed by template id; the base of every store. Stores share ``params``
    with their :class:`VectorIndex` (one dict: a parameter changed there applies here)."""

    KIND = "flat"
    uses_tombstones = False     # removal drops the entries
    copies = 1                  # entries each template has in the FAISS index
    searches_in_stages = False  # single queries with a stop score: see RefineStore

    def __init__(self, dim: int, params: dict, index: faiss.Index):
        self.dim = dim
        self.params = params
        self._index = index
        self._members = np.empty(0, dtype=np.int64)     # sorted ids present in the index
        self.apply_search_params()

    # ----------------------------------------------------------------- training
    @classmethod
    def train(cls, dim: int, params: dict, sample: np.ndarray) -> "FlatStore":
        """A trained, empty store of this kind (``params`` may gain the values chosen from
        ``sample``). Every kind but ``flat``, which is trained from the start."""
        raise NotImplementedError(f"{cls.KIND} needs no training")

    def entries(self):
        """``(ids, vectors)`` of everything stored, in chunks (a staging store, to move its
        vectors into the trained index)."""
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        for start in range(0, len(ids), _CHUNK):
            chunk = self._index.index.reconstruct_n(start, min(_CHUNK, len(ids) - start))
            yield ids[start:start + len(chunk)], chunk

    def vectors(self) -> np.ndarray:
        """Every stored vector (a staging store's training sample)."""
        return self._index.index.reconstruct_n(0, self._index.ntotal)

    def apply_search_params(self) -> None:
        """Push the search parameters in ``params`` into the FAISS index (nothing to push here)."""

    # ----------------------------------------------------------------- membership
    def __len__(self) -> int:
        return int(len(self._members))

    def ids(self) -> np.ndarray:
        return self._members.copy()

    @property
    def stored(self) -> int:
        """Entries in the FAISS index: tombstones and spill copies included."""
        return int(self._index.ntotal)

    @property
    def tombstones(self) -> int:
        if not self.uses_tombstones:
            return 0
        return self.stored // self.copies - len(self._members)

    # ----------------------------------------------------------------- mutation
    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Insert or replace (``ids`` unique)."""
        present = in_sorted(self._members, ids)
        if present.any():
            self._drop(ids[present])
        self._index.add_with_ids(x, ids)
        self._members, _ = merge_sorted(self._members, ids[~present])

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (unique); returns how many were present."""
        present = ids[in_sorted(self._members, ids)]
        if not len(present):
            return 0
        removed = self._drop(present)
        self._members = np.delete(self._members, np.searchsorted(self._members, present))
        return removed

    def _drop(self, ids: np.ndarray) -> int:
        """Take ids known to be present out of the FAISS index (not out of ``_members``)."""
        return int(self._index.remove_ids(ids))

    # ----------------------------------------------------------------- search
    def search(self, q: np.ndarray, k: int, stop_score: float | None) -> tuple[np.ndarray, np.ndarray, bool | None]:
        """``(scores, ids, stopped)``: the top ``k`` (missing slots: id -1, score -inf), and for
        a search in stages whether it stopped early (None: not such a search)."""
        scores, ids = self._index.search(q, k, params=self._search_params())
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        scores[ids < 0] = -np.inf
        return scores, ids, None

    def _search_params(self) -> faiss.SearchParameters | None:
        return None

    # ----------------------------------------------------------------- size and snapshots
    def memory_bytes(self) -> int:
        """Estimated resident bytes: vectors/codes, ids, coarse quantizer, transforms and the
        sorted id list kept for upserts."""
        return int(self._members.nbytes + self._index_bytes())

    def _index_bytes(self) -> int:
        return len(self) * (self.dim * 4 + 8)

    def header(self) -> dict:
        """The body's own header fields."""
        return {}

    def write(self, out: Writer) -> None:
        out.index(self._index)

    @classmethod
    def read(cls, dim: int, params: dict, meta: dict, body: Body) -> "FlatStore":
        """The store a snapshot's body holds, checked against itself."""
        store = cls._read_body(dim, params, meta, body)
        members = np.sort(store._stored_ids(body.path))
        if len(np.unique(members)) != len(members):
            raise SnapshotError(f"{body.path}: an id is stored twice")
        store._members = members
        return store

    @classmethod
    def _read_body(cls, dim: int, params: dict, meta: dict, body: Body) -> "FlatStore":
        return cls(dim, params, body.index())

    def _stored_ids(self, path) -> np.ndarray:
        """The template ids of the live entries of a loaded FAISS index."""
        ids = index_ids(self._index)
        if self.uses_tombstones:
            return ids[ids >= 0]
        if len(ids) != self._index.ntotal:
            raise SnapshotError(f"{path}: id list does not match the vector count")
        return ids


class IvfStore(FlatStore):
    """An inverted file (``IVF``), built from the kind's factory string."""

    @classmethod
    def train(cls, dim: int, params: dict, sample: np.ndarray) -> "IvfStore":
        index = faiss.index_factory(dim, factory_string(cls.KIND, dim, params), faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.niter = KMEANS_ITERATIONS
        index.train(sample)
        return cls(dim, params, index)

    def apply_search_params(self) -> None:
        ivf = faiss.extract_index_ivf(self._index)
        ivf.nprobe = min(int(self.params["nprobe"]), ivf.nlist)
        if self.params.get("hnsw_quantizer"):
            hnsw = faiss.downcast_index(ivf.quantizer)
            hnsw.hnsw.efSearch = max(64, 2 * int(self.params["nprobe"]))

    def _drop(self, ids: np.ndarray) -> int:
        if self.uses_tombstones:
            return tombstone_fast_scan(self._index, ids)
        return super()._drop(ids)

    def _search_params(self) -> faiss.SearchParametersIVF | None:
        return self._live_only(faiss.extract_index_ivf(self._index).nprobe)

    def _live_only(self, nprobe: int) -> faiss.SearchParametersIVF | None:
        """Search parameters that skip tombstones, or None while there are none."""
        return live_only(nprobe) if self.tombstones else None

    def _index_bytes(self) -> int:
        ivf = faiss.extract_index_ivf(self._index)
        total = int(ivf.ntotal) * (ivf.code_size + 8)       # spill copies and tombstones included
        total += ivf.nlist * ivf.d * 4
        if self.params.get("hnsw_quantizer"):
            total += ivf.nlist * 32 * 2 * 4 + ivf.nlist * 8
        if isinstance(self._index, faiss.IndexPreTransform):
            for i in range(self._index.chain.size()):
                transform = self._index.chain.at(i)
                total += transform.d_in * transform.d_out * 4
        return total


class IvfSqStore(IvfStore):
    KIND = "ivf_sq"


class IvfPqStore(IvfStore):
    KIND = "ivf_pq"

    @property
    def uses_tombstones(self) -> bool:
        """4-bit codes are packed for fast-scan, whose lists must not be compacted."""
        return self.params["nbits"] == 4
