"""FAISS vector index over face templates: exact or compressed approximate search, with
snapshots that record which change-log sequence number they reflect.

:class:`VectorIndex` is the one entry point; what it does for each kind lives in the modules
of this package, following the separation of policy from mechanics:

- ``policy``: which kind and parameters a gallery of a given size gets (``for_size``), the
  parameter defaults, the factory strings. No FAISS.
- ``flat_ivf``: the stores of ``flat`` (exact; also every kind's staging before it is trained)
  and of the factory-string kinds ``ivf_sq`` and ``ivf_pq``.
- ``hnsw``: ``hnsw_sq``, a graph index (not chosen by ``for_size``).
- ``refine``: ``ivf_pq_refine``, the two-stage kind for large galleries: 4-bit fast-scan codes
  of a rotated PCA projection in SOAR-spilled cells, rescored with 8-bit codes; its staged
  (early-stop) search and split scan. ``projection``: its PCA and rotation helpers (kept apart
  so that ``refine`` stays readable at one sitting).
- ``tombstones``: removal without deletion for the graph and fast-scan kinds, and the sorted id
  lists.
- ``snapshot``: the file format.

Each kind's store (one class per kind, all extending ``flat_ivf.FlatStore``) holds the FAISS
index and the ids in it; the index holds the store, its kind and its parameters (one dict,
shared with the store), and does what is the same for every kind: argument checks, upsert
semantics, staging and training, snapshots, statistics.

Training
--------
The approximate kinds need k-means (and OPQ/PQ) training on a sample of the real distribution.
Either call :meth:`VectorIndex.train` with a sample, or just :meth:`~VectorIndex.add`: until the
index is trained, vectors are kept in an exact staging index (searches stay exact) and, once
``train_size`` vectors have been added, the index trains on them and moves them over. A small
gallery therefore never pays for training it does not need.

Identity and removal
--------------------
``ids`` are int64 template ids. :meth:`~VectorIndex.add` is an upsert: an id that is already
present has its vector replaced, so replaying a change log over a snapshot that already holds
some of its entries neither duplicates nor loses anything. :meth:`~VectorIndex.remove` works
for every kind. ``flat`` and ``ivf_sq`` drop the entries; ``hnsw_sq`` and the 4-bit fast-scan
kinds (``ivf_pq`` with ``nbits=4``, ``ivf_pq_refine``) leave tombstones instead, skipped at
search and purged by a rebuild from the database (``tombstones``).

Threads
-------
FAISS uses OpenMP; :func:`set_threads` caps it (the service passes its configured core count).

The measured figures behind these choices are in benchmarks/results/index_scale.md; the
modules name its sections.
"""
from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from facegate.storage.datakeys import DataKeys
from facegate.storage.sealed import SealedReader, SealedWriter, is_sealed

from . import policy, snapshot
from .flat_ivf import FlatStore, IvfPqStore, IvfSqStore, flat_index
from .hnsw import HnswStore
from .refine import RefineStore
# Re-exported: callers import KINDS and SnapshotError from here, the tests ivf_pq_refine's helpers.
from .policy import KINDS  # noqa: F401
from .projection import _centroids, _leading_dims, _rotated_leading_axes  # noqa: F401
from .refine import _nearest_cells  # noqa: F401
from .snapshot import SnapshotError  # noqa: F401

_STORES = {store.KIND: store for store in (FlatStore, IvfSqStore, IvfPqStore, RefineStore, HnswStore)}


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


class VectorIndex:
    """A FAISS index of unit vectors keyed by int64 template id (see the package docstring)."""

    def __init__(self, dim: int, kind: str = "flat", **params):
        self.params = policy.parameters(kind, params)
        self.dim = int(dim)
        self.kind = kind
        self._trained = kind == "flat"
        self._store: FlatStore = FlatStore(self.dim, self.params, flat_index(self.dim))   # staging until trained
        self._reset_counters()

    def _reset_counters(self) -> None:
        """Search counters, which start at zero in every process (not kept in snapshots)."""
        self._staged = {"searches": 0, "stopped_early": 0}   # single queries searched in stages

    def __getattr__(self, name: str):
        """The store's own internals (``_index``, ``_members``; ivf_pq_refine's ``_refine``,
        ``_cells``, ``_slots``, ``_scan_cells`` ...) read through the index, as the tests and
        benchmarks that inspect them do. Only private names; public ones are all defined here."""
        store = self.__dict__.get("_store")       # absent while copy or pickle probe a bare object
        if store is None or not name.startswith("_") or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(store, name)

    # ----------------------------------------------------------------- construction
    @classmethod
    def for_size(cls, dim: int, expected_n: int, kind: str = "auto") -> "VectorIndex":
        """An index suited to a gallery of about ``expected_n`` templates (see
        :func:`policy.choose`)."""
        kind, params = policy.choose(expected_n, kind)
        return cls(dim, kind, **params)

    def _default_train_size(self) -> int:
        """``train_size`` for the current parameters (benchmarks/index_scale.py recomputes it
        after overriding ``nlist``)."""
        return policy.default_train_size(self.kind, self.params)

    def factory_string(self) -> str:
        """The ``faiss.index_factory`` description of the trained index."""
        return policy.factory_string(self.kind, self.dim, self.params)

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
        staging = self._store
        self._store = _STORES[self.kind].train(self.dim, self.params, sample)
        self._trained = True
        for ids, chunk in staging.entries():
            self._store.add(ids, chunk)

    def _maybe_train(self) -> None:
        if not self._trained and len(self._store) >= self.params["train_size"]:
            self.train(self._store.vectors())

    def set_ef_search(self, ef: int) -> None:
        """Change the HNSW search breadth (``hnsw_sq``: speed/recall trade-off)."""
        self.params["ef_search"] = int(ef)
        self._store.apply_search_params()

    def set_nprobe(self, nprobe: int) -> None:
        """Change how many IVF cells a query visits (speed/recall trade-off)."""
        self.params["nprobe"] = int(nprobe)
        self._store.apply_search_params()

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
        self._store.add(ids, x)
        self._maybe_train()

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present."""
        return self._store.remove(np.unique(_as_ids(ids)))

    def __len__(self) -> int:
        return len(self._store)

    def ids(self) -> np.ndarray:
        """All ids in the index, sorted."""
        return self._store.ids()

    @property
    def tombstones(self) -> int:
        """Slots of removed or replaced templates still in the index (``hnsw_sq`` and the 4-bit
        fast-scan IVF kinds; 0 otherwise). A rebuild from the database purges them."""
        return self._store.tombstones

    # ----------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int, stop_score: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product (= cosine for unit vectors; approximate for the
        compressed kinds). Returns ``(scores [q,k] float32, ids [q,k] int64)``; missing slots
        have id -1 and score -inf.

        ``stop_score`` (``ivf_pq_refine``, one query at a time): stop early when the nearest
        ``first_probe`` cells already hold a candidate scoring at least this much, instead of
        scanning all ``nprobe`` (see ``refine.RefineStore.search``). Other kinds ignore it."""
        q = _as_vectors(queries, self.dim)
        k = int(k)
        if k <= 0 or not len(q):
            return (np.empty((len(q), max(k, 0)), np.float32), np.empty((len(q), max(k, 0)), np.int64))
        if self._store.stored == 0:
            return (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
        scores, ids, stopped = self._store.search(q, k, stop_score)
        if stopped is not None:
            self._staged["searches"] += 1
            self._staged["stopped_early"] += int(stopped)
        return scores, ids

    # ----------------------------------------------------------------- persistence
    def save(self, path, applied_seq: int, keys: DataKeys | None = None) -> None:
        """Write a snapshot atomically (see ``snapshot.write``): a crash leaves either the old
        snapshot or the new one. With ``keys`` the file is sealed with the current data key
        (the index holds every template or its codes: biometric data)."""
        meta = {"dim": self.dim, "kind": self.kind, "params": self.params, "trained": self._trained,
                "applied_seq": int(applied_seq), "ntotal": len(self)}
        wrap = None if keys is None else (lambda f: SealedWriter(f, keys))
        snapshot.write(path, meta, self._store.header(), self._store.write, wrap=wrap)

    @classmethod
    def load(cls, path, keys: DataKeys | None = None) -> tuple["VectorIndex", int]:
        """Read a snapshot written by :meth:`save` (sealed ones with ``keys``); returns
        ``(index, applied_seq)``. Raises :class:`SnapshotError` when the file is missing or
        damaged, ``data_key_unavailable`` when a sealed one cannot be opened with ``keys``."""
        unwrap = None
        if keys is not None and Path(path).exists() and is_sealed(path):
            unwrap = lambda f: SealedReader(f, keys, str(path))  # noqa: E731
        with snapshot.read(path, unwrap) as (meta, body):
            self = cls.__new__(cls)
            self.dim = int(meta["dim"])
            self.kind = meta["kind"]
            self.params = {**policy.DEFAULTS[self.kind], **meta["params"]}   # parameters added since keep their defaults
            self._trained = bool(meta["trained"])
            store = _STORES[self.kind] if self._trained else FlatStore
            self._store = store.read(self.dim, self.params, meta, body)
        self._reset_counters()
        return self, int(meta["applied_seq"])

    # ----------------------------------------------------------------- introspection
    def stats(self) -> dict:
        """Kind, size, estimated memory and parameters (and, for a kind that searches in
        stages, how many single queries stopped early)."""
        staged = _STORES[self.kind].searches_in_stages
        return {
            "kind": self.kind,
            "ntotal": len(self),
            "bytes": self.memory_bytes(),
            "bytes_per_vector": round(self.memory_bytes() / len(self), 1) if len(self) else None,
            "trained": self._trained,
            "tombstones": self.tombstones,
            "factory": self.factory_string(),
            "params": dict(self.params),
            **({"staged_searches": dict(self._staged)} if staged else {}),
        }

    def memory_bytes(self) -> int:
        """Estimated resident bytes: vectors/codes, ids, coarse quantizer, transforms and the
        sorted id list kept for upserts."""
        return self._store.memory_bytes()
