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
entries neither duplicates nor loses anything. :meth:`remove` works for every kind (IVF lists
are scanned for the ids; ``hnsw_sq`` leaves tombstones, see above).

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

KINDS = ("flat", "ivf_sq", "ivf_pq", "hnsw_sq")

# Sizes at which for_size() switches kind; see benchmarks/results/index_scale.md for the figures
# behind them (flat single-query latency grows linearly: 18 ms p50 at 100k on a 16-core
# server CPU, one thread; ivf_sq at nprobe=nlist/4: 25 ms p50 at 1M).
FLAT_MAX = 100_000
SQ_MAX = 2_000_000

_MAGIC = b"FGVIDX01"
_DEFAULTS = {
    "flat": {},
    "ivf_sq": {"nlist": 1024, "nprobe": 16, "qtype": "SQ8", "pca": 0, "hnsw_quantizer": False},
    "ivf_pq": {"nlist": 4096, "nprobe": 32, "m": 64, "nbits": 4, "opq": False, "pca": 0,
               "hnsw_quantizer": False},
    "hnsw_sq": {"pca": 128, "m": 16, "ef_construction": 64, "ef_search": 128, "normalize": False},
}
HNSW_MIN_CANDIDATES = 50


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
        if kind != "flat":
            self.params.setdefault("train_size", self._default_train_size())
        self._index: faiss.Index = _flat(self.dim)   # staging (exact) until trained
        self._trained = kind == "flat"
        self._members = np.empty(0, dtype=np.int64)  # sorted ids present in the index
        if self._trained:
            self._apply_search_params()

    # ----------------------------------------------------------------- construction
    @classmethod
    def for_size(cls, dim: int, expected_n: int, kind: str = "auto") -> "VectorIndex":
        """An index suited to a gallery of about ``expected_n`` templates.

        ``auto``: exact ``flat`` up to ``FLAT_MAX`` (one query scans 100k templates in ~18 ms
        on one core and costs 2 KiB per template), ``ivf_sq`` (SQ8, ~0.52 KiB per template, recall@1 ~1.0) up to
        ``SQ_MAX``, and the compressed ``ivf_pq`` beyond, where memory dominates.
        ``nlist`` grows as ~2*sqrt(n) (power of two): lists of ~sqrt(n)/2 vectors, and k-means
        training (>= 39 points per list) that stays affordable on 2 cores at 10M.
        """
        n = max(int(expected_n), 1)
        if kind == "auto":
            kind = "flat" if n <= FLAT_MAX else ("ivf_sq" if n <= SQ_MAX else "ivf_pq")
        if kind == "flat":
            return cls(dim, "flat")
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
            for start in range(0, n, 65536):
                chunk = staged.index.reconstruct_n(start, min(65536, n - start))
                self._index.add_with_ids(chunk, ids[start:start + len(chunk)])

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
        """Removed or replaced templates still in the graph (``hnsw_sq`` only; 0 otherwise)."""
        if self.kind != "hnsw_sq" or not self._trained:
            return 0
        return int(self._index.ntotal) - len(self._members)

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
        ivf.nprobe = int(self.params["nprobe"])
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
        if not len(self._members):
            return np.zeros(len(ids), dtype=bool)
        pos = np.searchsorted(self._members, ids)
        pos = np.minimum(pos, len(self._members) - 1)
        return self._members[pos] == ids

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
        present = self._contains(ids)
        if present.any():
            self._remove_present(ids[present])
        self._index.add_with_ids(x, ids)
        new = np.sort(ids[~present])
        if not len(self._members) or (len(new) and new[0] > self._members[-1]):
            self._members = np.concatenate([self._members, new])     # ids usually grow
        else:   # two sorted runs: the stable sort (timsort) merges them in linear time
            self._members = np.sort(np.concatenate([self._members, new]), kind="stable")
        self._maybe_train()

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present."""
        ids = np.unique(_as_ids(ids))
        present = ids[self._contains(ids)]
        if not len(present):
            return 0
        removed = self._remove_present(present)
        self._members = np.delete(self._members, np.searchsorted(self._members, present))
        return removed

    def _remove_present(self, ids: np.ndarray) -> int:
        """Drop ids known to be present from the FAISS index (not from ``_members``)."""
        if self.kind == "hnsw_sq" and self._trained:
            labels = self._labels()
            dead = np.flatnonzero(np.isin(labels, ids))
            labels[dead] = -1
            return int(len(dead))
        return int(self._index.remove_ids(ids))

    def __len__(self) -> int:
        return int(len(self._members))

    def ids(self) -> np.ndarray:
        """All ids in the index, sorted."""
        return self._members.copy()

    # ----------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product (= cosine for unit vectors; approximate for the
        compressed kinds). Returns ``(scores [q,k] float32, ids [q,k] int64)``; missing slots
        have id -1 and score -inf."""
        q = _as_vectors(queries, self.dim)
        k = int(k)
        if k <= 0 or not len(q):
            return (np.empty((len(q), max(k, 0)), np.float32), np.empty((len(q), max(k, 0)), np.int64))
        if self._index.ntotal == 0:
            return (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
        if self.kind == "hnsw_sq" and self._trained:
            return self._search_hnsw(q, k)
        scores, ids = self._index.search(q, k)
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _search_hnsw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        stored = int(self._index.ntotal)
        fetch = max(k, HNSW_MIN_CANDIDATES)
        if self.tombstones:     # tombstones take result slots: ask for proportionally more
            fetch = int(math.ceil(fetch * stored / max(len(self._members), 1))) + 8
        fetch = min(fetch, stored)
        hnsw = self._hnsw().hnsw
        ef = hnsw.efSearch
        hnsw.efSearch = max(ef, fetch)
        try:
            scores, ids = self._index.search(q, fetch)
        finally:
            hnsw.efSearch = ef
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for row in range(len(q)):
            live = ids[row] >= 0        # tombstones and empty slots
            s, i = scores[row][live][:k], ids[row][live][:k]
            out_s[row, :len(s)], out_i[row, :len(i)] = s, i
        return out_s, out_i

    # ----------------------------------------------------------------- persistence
    def save(self, path, applied_seq: int) -> None:
        """Write a snapshot atomically: a temporary file beside ``path`` is written, fsynced and
        renamed over it, so a crash leaves either the old snapshot or the new one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({
            "format": 1, "dim": self.dim, "kind": self.kind, "params": self.params,
            "trained": self._trained, "applied_seq": int(applied_seq), "ntotal": len(self),
            "faiss_version": faiss.__version__,
        }).encode()
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(_MAGIC + struct.pack("<Q", len(header)) + header)
                faiss.write_index(self._index, faiss.PyCallbackIOWriter(f.write))
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
            f.seek(size - len(_MAGIC))
            if f.read(len(_MAGIC)) != _MAGIC:
                raise SnapshotError(f"{path} is truncated")
            f.seek(len(_MAGIC) + 8 + hlen)
            body_len = size - len(_MAGIC) * 2 - 8 - hlen
            reader = _BoundedReader(f, body_len)
            try:
                index = faiss.read_index(faiss.PyCallbackIOReader(reader.read))
            except RuntimeError as exc:
                raise SnapshotError(f"{path}: damaged index body: {exc}") from exc
        self = cls.__new__(cls)
        self.dim = int(meta["dim"])
        self.kind = meta["kind"]
        self.params = meta["params"]
        self._trained = bool(meta["trained"])
        self._index = index
        stored_ids = _index_ids(index)
        if self.kind == "hnsw_sq" and self._trained:
            stored_ids = stored_ids[stored_ids >= 0]     # tombstones
        self._members = np.sort(stored_ids)
        if self.kind != "hnsw_sq" and len(self._members) != index.ntotal:
            raise SnapshotError(f"{path}: id list does not match the vector count")
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
        total += n * (ivf.code_size + 8)
        total += ivf.nlist * ivf.d * 4
        if self.params.get("hnsw_quantizer"):
            total += ivf.nlist * 32 * 2 * 4 + ivf.nlist * 8
        if isinstance(self._index, faiss.IndexPreTransform):
            total += self.dim * self.dim * 4
        return int(total)


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
