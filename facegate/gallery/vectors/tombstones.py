"""Removal without deletion, and the sorted id lists every kind keeps.

The graph (``hnsw_sq``) and the 4-bit fast-scan IVF kinds (``ivf_pq`` with ``nbits=4``,
``ivf_pq_refine``) never delete: a removed or replaced template leaves a tombstone, its slot's
id set to -1 and, for the fast-scan kinds, its packed code zeroed, so that an erased face
leaves no code behind. HNSW cannot delete at all; FAISS 1.15's
``IndexIVFFastScan.remove_ids`` corrupts later additions to the lists it compacted (vectors
added afterwards are mostly not found; tested in tests/test_vector_index.py). Searches skip
tombstones (IVF: an id selector, since an all-zero code can outscore every live entry for some
queries; graph: proportionally more candidates are fetched), and a rebuild from the database
purges them (the gallery rebuilds at start-up when they pass 20 %).
"""
from __future__ import annotations

import math

import faiss
import numpy as np

_LIVE_IDS = faiss.IDSelectorRange(0, 2**63 - 1)     # every id but tombstones (-1)


def live_only(nprobe: int) -> faiss.SearchParametersIVF:
    """IVF search parameters that skip tombstones; used only while there are some, since the
    selector costs a little on every entry scanned (section "Cells of the projection, SOAR
    spill (session 6)" of benchmarks/results/index_scale.md)."""
    return faiss.SearchParametersIVF(sel=_LIVE_IDS, nprobe=int(nprobe))


def tombstone_fast_scan(index: faiss.Index, ids: np.ndarray) -> int:
    """Mark ``ids`` dead in a (pre-transformed) fast-scan IVF: id -1 and the packed code zeroed,
    so nothing derived from the face stays behind (erasure) and searches skip the slot. Every
    copy of an id (ivf_pq_refine's spill) is marked; returns how many entries were."""
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
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
        hits = np.flatnonzero(in_sorted(ids, list_ids))
        if not len(hits):
            continue
        blocks = (size + packer.nvec - 1) // packer.nvec
        codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), blocks * packer.block_size)
        for offset in hits:
            packer.pack_1(zero, int(offset), codes.reshape(blocks, packer.block_size))
        list_ids[hits] = -1
        dead += len(hits)
    return dead


def tombstone_graph(index: faiss.IndexIDMap, ids: np.ndarray) -> int:
    """Mark ``ids`` dead in an ``IndexIDMap`` over a graph: their id slots become -1 (the
    graph keeps the nodes). Returns how many slots were marked."""
    id_map = index.id_map
    labels = faiss.rev_swig_ptr(id_map.data(), id_map.size())     # writable view
    dead = np.flatnonzero(np.isin(labels, ids))
    labels[dead] = -1
    return int(len(dead))


def with_margin(k: int, live: int, dead: int) -> int:
    """Results to fetch from a graph so that ``k`` live ones survive its tombstones: ``k``
    scaled by the share of dead slots, plus a few, at most every slot."""
    if not dead:
        return k
    stored = live + dead
    return min(int(math.ceil(k * stored / max(live, 1))) + 8, stored)


def first_live(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` results of each row that are not tombstones or empty slots (id -1)."""
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for row in range(len(ids)):
        live = ids[row] >= 0
        s, i = scores[row][live][:k], ids[row][live][:k]
        out_s[row, :len(s)], out_i[row, :len(i)] = s, i
    return out_s, out_i


def in_sorted(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Which of ``x`` are in ``sorted_values`` (sorted, unique), by binary search."""
    if not len(sorted_values):
        return np.zeros(len(x), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, x), len(sorted_values) - 1)
    return sorted_values[pos] == x


def merge_sorted(values: np.ndarray, new: np.ndarray, rows: np.ndarray | None = None,
                 new_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``values`` (sorted, unique) with ``new`` (none of them in it) merged in; ``rows``, one
    per value (ivf_pq_refine's refinement rows) or None, reordered along with them and
    ``new_rows`` merged in likewise."""
    order = np.argsort(new, kind="stable")
    new = new[order]
    if not len(new):
        return values, rows
    merged_values = np.concatenate([values, new])
    merged_rows = np.concatenate([rows, new_rows[order]]) if rows is not None else None
    if len(values) and new[0] <= values[-1]:
        # two sorted runs: the stable sort (timsort) merges them in linear time
        merged = np.argsort(merged_values, kind="stable")
        merged_values = merged_values[merged]
        merged_rows = merged_rows[merged] if merged_rows is not None else None
    return merged_values, merged_rows             # (ids usually grow: appended as they are)
