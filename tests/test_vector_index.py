"""VectorIndex: exact search against numpy, upserts and removal, snapshots, and the recall of
the approximate kinds on a gallery fitted to real embeddings with planted real identities."""
from __future__ import annotations

import os

import numpy as np
import pytest

from facegate.gallery.vectors import SnapshotError, VectorIndex, _nearest_cells, set_threads

DIM = 512


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    set_threads(2)


@pytest.fixture
def gallery():
    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal((2000, DIM)))
    ids = rng.choice(10**9, size=len(x), replace=False).astype(np.int64)
    return ids, x


def numpy_topk(ids, x, q, k):
    s = q @ x.T
    order = np.argsort(-s, axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), ids[order]


def test_flat_search_matches_numpy(gallery):
    ids, x = gallery
    index = VectorIndex(DIM)
    index.add(ids, x)
    q = unit(np.random.default_rng(4).standard_normal((25, DIM)))
    scores, got = index.search(q, 5)
    want_s, want_i = numpy_topk(ids, x, q, 5)
    assert np.array_equal(got, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
    assert len(index) == len(ids)


def test_short_gallery_pads_with_minus_one():
    index = VectorIndex(DIM)
    scores, ids = index.search(unit(np.ones((1, DIM))), 3)
    assert (ids == -1).all() and np.isneginf(scores).all()
    index.add(np.array([7]), unit(np.ones((1, DIM))))
    scores, ids = index.search(unit(np.ones((1, DIM))), 3)
    assert ids[0].tolist() == [7, -1, -1]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5) and np.isneginf(scores[0, 1:]).all()


@pytest.mark.parametrize("kind,params", [("flat", {}), ("ivf_sq", {"nlist": 16, "nprobe": 16}), ("hnsw_sq", {}),
                                         ("ivf_pq", {"nlist": 16, "nprobe": 16}),
                                         ("ivf_pq_refine", {"nlist": 16, "nprobe": 16})])
def test_add_is_upsert_and_remove_works(gallery, kind, params):
    ids, x = gallery
    index = VectorIndex(DIM, kind, **params)
    index.train(x) if kind != "flat" else None
    index.add(ids, x)
    index.add(ids[:10], x[:10])                   # replaying the same entries: no duplicates
    assert len(index) == len(ids)
    index.add(ids[:1], x[1:2])                    # same id, new vector: replaced
    assert len(index) == len(ids)
    _, got = index.search(x[1:2], 3)
    assert sorted(got[0, :2].tolist()) == sorted([ids[0], ids[1]])

    assert index.remove(ids[:100]) == 100
    assert index.remove(ids[:100]) == 0            # already gone
    assert index.remove(np.array([-5, 123456789012])) == 0
    assert len(index) == len(ids) - 100
    _, got = index.search(x[:100], 5)
    assert not np.isin(got, ids[:100]).any()
    _, got = index.search(x[100:110], 1)
    assert got[:, 0].tolist() == ids[100:110].tolist()


def test_save_load_round_trip(tmp_path, gallery):
    ids, x = gallery
    index = VectorIndex(DIM, "ivf_sq", nlist=16, nprobe=4)
    index.train(x)
    index.add(ids, x)
    index.remove(ids[:5])
    q = x[10:30]
    before = index.search(q, 5)
    index.save(tmp_path / "gallery.idx", applied_seq=4242)
    loaded, seq = VectorIndex.load(tmp_path / "gallery.idx")
    assert seq == 4242
    assert loaded.kind == "ivf_sq" and loaded.params["nprobe"] == 4 and loaded.is_trained
    assert len(loaded) == len(ids) - 5
    after = loaded.search(q, 5)
    assert np.array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0])
    # ids survive the round trip, so upserts after a restart still replace instead of duplicating
    loaded.add(ids[10:20], x[10:20])
    assert len(loaded) == len(ids) - 5
    assert loaded.stats()["ntotal"] == len(ids) - 5


def test_refine_snapshot_round_trip_and_older_formats_are_refused(tmp_path, gallery):
    """ivf_pq_refine snapshots keep both transforms (PCA, rotated leading axes) and the cells of
    the PCA space; snapshots of formats 1 and 2 (the IVF scanned the raw projection; cells of
    the scanned axes, no spill) are refused, so the gallery rebuilds the index from the
    database instead of adding templates to cells it cannot compute."""
    ids, x = gallery
    index = VectorIndex(DIM, "ivf_pq_refine", nlist=16, nprobe=16, first_probe=4)
    index.train(x)
    index.add(ids, x)
    before = index.search(x[:20], 5)
    path = tmp_path / "refine.idx"
    index.save(path, applied_seq=7)
    loaded, _ = VectorIndex.load(path)
    after = loaded.search(x[:20], 5)
    assert np.array_equal(before[1], after[1]) and before[1][:, 0].tolist() == ids[:20].tolist()
    # a loaded index serves the gallery's single-query searches with a stop score too
    # (its search counters start afresh in the new process)
    _, got = loaded.search(x[:1], 5, stop_score=0.6)
    assert got[0, 0] == ids[0]
    assert loaded.stats()["staged_searches"] == {"searches": 1, "stopped_early": 1}
    data = path.read_bytes()
    assert data.count(b'"format": 3') == 1
    for old in (b'"format": 2', b'"format": 1'):
        path.write_bytes(data.replace(b'"format": 3', old))
        with pytest.raises(SnapshotError, match="rebuild"):
            VectorIndex.load(path)


def test_hnsw_tombstones_are_skipped_and_survive_save_load(tmp_path, gallery):
    ids, x = gallery
    index = VectorIndex(DIM, "hnsw_sq", train_size=1500)
    index.add(ids[:1000], x[:1000])
    assert not index.is_trained                    # staged exactly until train_size
    index.add(ids[1000:], x[1000:])
    assert index.is_trained and index.stats()["factory"] == "IDMap,PCA128(uncentred),HNSW16_SQ8"
    _, got = index.search(x[:200], 1)
    assert got[:, 0].tolist() == ids[:200].tolist()

    # removing most of the gallery: tombstones must not crowd the live results out
    assert index.remove(ids[:1500]) == 1500
    index.add(ids[1500:1510], x[1500:1510])        # upserts tombstone the replaced slots too
    assert len(index) == 500 and index.tombstones == 1510
    _, got = index.search(x[1500:1600], 5)
    assert not np.isin(got, ids[:1500]).any() and (got >= 0).all()
    assert got[:, 0].tolist() == ids[1500:1600].tolist()

    index.save(tmp_path / "hnsw.idx", applied_seq=77)
    loaded, seq = VectorIndex.load(tmp_path / "hnsw.idx")
    assert seq == 77 and len(loaded) == 500 and loaded.tombstones == 1510
    assert loaded.params["ef_search"] == index.params["ef_search"]
    _, again = loaded.search(x[1500:1600], 5)
    assert np.array_equal(got, again)
    assert loaded.remove(ids[:10]) == 0            # tombstoned ids stay gone after a restart
    loaded.add(ids[:1], x[:1])                     # and can come back
    _, got = loaded.search(x[:1], 1)
    assert got[0, 0] == ids[0] and len(loaded) == 501
    assert loaded.stats()["bytes_per_vector"] > 0


@pytest.mark.parametrize("kind", ["ivf_pq", "ivf_pq_refine"])
def test_fast_scan_removal_keeps_nothing_and_later_additions_are_found(tmp_path, gallery, kind):
    """Fast-scan IVF lists are never compacted (FAISS 1.15 loses vectors added after a
    remove_ids): removed entries become tombstones with id -1 and all-zero codes."""
    ids, x = gallery
    index = VectorIndex(DIM, kind, nlist=16, nprobe=16)
    index.train(x)
    index.add(ids[:1500], x[:1500])
    assert index.remove(ids[:300]) == 300
    index.add(ids[1500:], x[1500:])               # lands in lists that had removals
    index.add(ids[300:310], x[300:310])           # upserts tombstone the replaced slots
    assert len(index) == 1700 and index.tombstones == 310
    _, got = index.search(x[1500:], 1)
    assert np.mean(got[:, 0] == ids[1500:]) >= 0.99
    _, got = index.search(x[:300], 10)
    assert not np.isin(got, ids[:300]).any() and (got >= 0).all()

    import faiss
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index._index))
    packer, lists = ivf.get_CodePacker(), faiss.downcast_InvertedLists(ivf.invlists)
    dead = 0
    for list_no in range(ivf.nlist):
        size = lists.list_size(list_no)
        list_ids = faiss.rev_swig_ptr(lists.get_ids(list_no), size)
        blocks = (size + packer.nvec - 1) // packer.nvec
        codes = faiss.rev_swig_ptr(lists.get_codes(list_no), blocks * packer.block_size).reshape(blocks, -1)
        for offset in np.flatnonzero(list_ids < 0):
            assert not packer.unpack_1(codes, int(offset)).any()
            dead += 1
    assert dead == 310 * (2 if kind == "ivf_pq_refine" else 1)     # ivf_pq_refine: both cells' copies
    if kind == "ivf_pq_refine":                    # released refinement rows are zeroed too
        refine = index._refine
        assert len(refine.free) == 10 and not refine.codes[refine.free].any()   # 300 reused by the 500 adds

    index.save(tmp_path / "fs.idx", applied_seq=3)
    loaded, _ = VectorIndex.load(tmp_path / "fs.idx")
    assert len(loaded) == 1700 and loaded.tombstones == 310
    assert np.array_equal(loaded.search(x[1500:1600], 5)[1], index.search(x[1500:1600], 5)[1])
    loaded.add(ids[:5], x[:5])                     # removed ids can come back after a restart
    _, got = loaded.search(x[:5], 1)
    assert got[:, 0].tolist() == ids[:5].tolist()


def test_refine_spill_puts_each_template_in_its_nearest_cell_and_a_soar_cell():
    """With ``spill`` 2 (the default) every template is stored in two cells of the PCA space:
    the nearest, and the one SOAR's rule picks (||x - c||^2 + (r.(x - c))^2 / ||r||^2 smallest,
    r the residual to the first). Searches return each template once; removal leaves neither
    copy; a snapshot keeps both."""
    import faiss
    from facegate.gallery.vectors import _centroids
    rng = np.random.default_rng(31)
    basis = np.linalg.qr(rng.standard_normal((DIM, 150)))[0].T
    x = unit(rng.standard_normal((3000, 150)) @ basis)
    ids = np.arange(50_000, 53_000, dtype=np.int64)
    index = VectorIndex(DIM, "ivf_pq_refine", nlist=32, nprobe=8, first_probe=2)
    index.train(x)
    index.add(ids, x)
    ivf = index._ivf_fast_scan()
    assert ivf.ntotal == 2 * len(ids) and index.tombstones == 0
    # the cells are those of the projection; the IVF ranks them by their scanned axes
    cells = _centroids(index._cells)
    assert cells.shape == (32, index.params["pca"])
    np.testing.assert_allclose(_centroids(faiss.downcast_index(ivf.quantizer)), index._scan_project(cells), atol=1e-5)
    # where each row is stored, against the rule computed here over all 32 cells
    where = {}
    for list_no in range(ivf.nlist):
        size = ivf.invlists.list_size(list_no)
        for row in faiss.rev_swig_ptr(ivf.invlists.get_ids(list_no), size):
            where.setdefault(int(row), []).append(list_no)
    projected = index._project(x)
    dots = projected @ cells.T
    first = dots.argmax(1)
    r = projected - cells[first]
    cost = ((projected[:, None] - cells[None]) ** 2).sum(2) + ((r[:, None] * (projected[:, None] - cells[None])).sum(2)) ** 2 / (r * r).sum(1, keepdims=True)
    cost[np.arange(len(x)), first] = np.inf
    second = cost.argmin(1)
    rows = index._slots[np.searchsorted(index._members, ids)]
    stored = [sorted(where[int(row)]) for row in rows]
    assert all(len(s) == 2 for s in stored)
    agree = np.mean([s == sorted([f, c]) for s, f, c in zip(stored, first, second)])
    assert agree >= 0.99, agree           # float32 rounding may flip a near tie
    # the second cell is not simply the second nearest
    assert np.mean(second != np.argsort(-dots, 1)[:, 1]) > 0.2
    # each template once in the results, staged or not, single queries or batches
    queries = unit(x[:40] + 0.04 * rng.standard_normal((40, 150)) @ basis)    # cosine ~0.9 with x[:40]
    for q in queries[:10]:
        for stop in (None, 0.99):
            _, got = index.search(q[None], 20, stop_score=stop)
            assert len(set(got[0].tolist())) == 20
    _, got = index.search(queries, 20)
    assert all(len(set(row.tolist())) == 20 for row in got)
    assert np.mean(got[:, 0] == ids[np.argmax(queries @ x.T, 1)]) >= 0.95
    # removal tombstones both copies; the rest is found, nothing removed comes back
    assert index.remove(ids[:100]) == 100
    assert index.tombstones == 100
    dead = sum(int((faiss.rev_swig_ptr(ivf.invlists.get_ids(l), ivf.invlists.list_size(l)) < 0).sum())
               for l in range(ivf.nlist))
    assert dead == 200
    _, got = index.search(x[:100], 5)
    assert not np.isin(got, ids[:100]).any() and (got >= 0).all()
    _, got = index.search(x[100:140], 1)
    assert got[:, 0].tolist() == ids[100:140].tolist()
    memory = index.memory_bytes()
    assert memory >= ivf.ntotal * (ivf.code_size + 8) + index._refine.used * (index.params["pca"] + 8)


def test_refine_projection_finds_a_low_rank_subspace():
    """Embeddings that span ~150 of 512 dimensions (this pack's span ~160, measured on LFW in
    benchmarks/results/index_scale.md) get a 160-D projection, of which the leading axes
    holding 97 % of the energy are scanned, and ivf_pq_refine's scores through it match exact
    cosine to the 8-bit quantisation (~1e-3)."""
    from facegate.gallery.vectors import _leading_dims
    rng = np.random.default_rng(11)
    basis = np.linalg.qr(rng.standard_normal((DIM, 150)))[0].T          # 150 orthonormal rows
    scale = np.linspace(2.0, 0.2, 150)                                    # a decaying spectrum
    x = unit((rng.standard_normal((4000, 150)) * scale) @ basis + 1e-4 * rng.standard_normal((4000, DIM)))
    assert _leading_dims(x, 1e-4, 16) == 160
    assert _leading_dims(unit(rng.standard_normal((4000, DIM))), 1e-4, 16) == DIM    # full rank: no cut
    energy = np.linalg.eigvalsh(x.T.astype(np.float64) @ x)[::-1]
    scan_dims = _leading_dims(x, 0.03, 8)
    assert energy[:scan_dims].sum() / energy.sum() >= 0.97 > energy[:scan_dims - 8].sum() / energy.sum()
    index = VectorIndex(DIM, "ivf_pq_refine", nlist=16, nprobe=16)
    index.train(x[:3000])
    assert index.params["pca"] == 160 and index.params["scan_dims"] == scan_dims < 150
    assert index.params["m"] == scan_dims // 2
    index.add(np.arange(3000, 4000), x[3000:])
    q = unit(x[3000:3100] + 0.05 * rng.standard_normal((100, DIM)) @ basis.T @ basis)
    scores, got = index.search(q, 3)
    exact = np.einsum("ij,ikj->ik", q, x[got])
    assert np.abs(scores - exact).max() < 1e-2 and np.abs(scores - exact).mean() < 2e-3
    assert got[:, 0].tolist() == list(range(3000, 3100))


def test_refine_search_stops_early_on_a_strong_candidate_in_the_nearest_cells():
    """With ``stop_score``, a query whose match lies in its nearest ``first_probe`` cells ends
    there; a query with nothing that strong is searched to full depth and gets the answer of
    the one-stage search."""
    rng = np.random.default_rng(12)
    basis = np.linalg.qr(rng.standard_normal((DIM, 150)))[0].T
    x = unit(rng.standard_normal((6000, 150)) @ basis)
    index = VectorIndex(DIM, "ivf_pq_refine", nlist=32, nprobe=32, first_probe=2)
    index.train(x[:3000])
    ids = np.arange(10_000, 16_000, dtype=np.int64)
    index.add(ids, x)
    near = unit(x[:60] + 0.02 * rng.standard_normal((60, 150)) @ basis)   # cosine ~0.95 with x[:60]
    far = unit(rng.standard_normal((60, 150)) @ basis)                      # best match ~0.3
    for q in near:
        _, got = index.search(q[None], 5, stop_score=0.8)
        assert got[0, 0] in ids[:60] and got[0, 0] == ids[int(np.argmax(x @ q))]
    assert index.stats()["staged_searches"] == {"searches": 60, "stopped_early": 60}
    one_stage = index.search(far, 5)[1]
    staged = np.concatenate([index.search(q[None], 5, stop_score=0.8)[1] for q in far])
    assert index.stats()["staged_searches"] == {"searches": 120, "stopped_early": 60}
    assert np.mean(staged[:, 0] == one_stage[:, 0]) >= 0.95
    assert np.mean(staged[:, 0] == ids[np.argmax(far @ x.T, axis=1)]) >= 0.9
    # a stop score nothing reaches in the nearest cells never cuts a search short
    index.search(near[:1], 5, stop_score=1.5)
    assert index.stats()["staged_searches"] == {"searches": 121, "stopped_early": 60}
    # batches and searches without stop_score keep the one-stage path
    index.search(near[:3], 5, stop_score=0.8)
    index.search(near[:1], 5)
    assert index.stats()["staged_searches"]["searches"] == 121


def test_single_query_scan_split_over_threads_finds_what_one_scan_finds():
    """A single query's cells are dealt out to one copy of the query per thread: the
    candidates kept are those one scan over all the cells keeps, also when the cells do not
    divide evenly (padding) and when some copies get no cell at all."""
    rng = np.random.default_rng(21)
    basis = np.linalg.qr(rng.standard_normal((DIM, 150)))[0].T
    x = unit(rng.standard_normal((8000, 150)) @ basis)
    index = VectorIndex(DIM, "ivf_pq_refine", nlist=64, nprobe=37, shortlist=40, spill=1)
    index.train(x[:4000])
    index.add(np.arange(len(x), dtype=np.int64), x)
    queries = unit(x[:40] + 0.3 * rng.standard_normal((40, 150)) @ basis)

    def candidates(parts, nprobe):
        index.params["scan_parts"] = parts
        ivf = index._ivf_fast_scan()
        found = []
        for q in queries:
            scan = index._scan_project(index._project(q[None]))
            cells, cell_scores = _nearest_cells(ivf, scan[0], nprobe, nprobe)
            found.append(set(index._scan_cells(ivf, scan, cells, cell_scores, 40).tolist()))
        return found

    for nprobe in (37, 3):
        whole = candidates(1, nprobe)
        assert all(len(c) == 40 for c in whole)
        for parts in (2, 3, 8):
            split = candidates(parts, nprobe)
            overlap = np.mean([len(a & b) / len(a) for a, b in zip(whole, split)])
            assert overlap >= 0.99, (nprobe, parts, overlap)
            assert all(len(c) == 40 for c in split)
    index.params["scan_parts"] = 0
    _, got = index.search(queries[:1], 3)
    assert got[0, 0] == int(np.argmax(x @ queries[0]))


def test_scan_stage_keeps_the_leading_axes_and_rotates_them():
    """ivf_pq_refine scans the first 2/3 of the PCA axes, turned by an orthogonal rotation:
    inner products within those axes are kept, the trailing axes are dropped, and the
    variance of a leading-heavy sample ends up spread evenly over the PQ's 2-D sub-spaces."""
    from facegate.gallery.vectors import _rotated_leading_axes
    rng = np.random.default_rng(3)
    transform = _rotated_leading_axes(192, 128)
    z = rng.standard_normal((500, 192)).astype(np.float32) * np.linspace(3, 0.1, 192, dtype=np.float32)
    y = transform.apply(z)
    assert y.shape == (500, 128)
    np.testing.assert_allclose(y @ y[:10].T, z[:, :128] @ z[:10, :128].T, rtol=1e-4, atol=1e-3)
    trailing = np.zeros_like(z)
    trailing[:, 128:] = z[:, 128:]
    assert np.abs(transform.apply(trailing)).max() == 0
    pair_energy = (y ** 2).reshape(500, 64, 2).sum(2).mean(0)
    leading_energy = (z[:, :128] ** 2).reshape(500, 64, 2).sum(2).mean(0)
    assert pair_energy.max() / pair_energy.min() < 2 < leading_energy.max() / leading_energy.min()


def test_untrained_index_stages_exactly_and_trains_lazily(tmp_path, gallery):
    ids, x = gallery
    index = VectorIndex(DIM, "ivf_sq", nlist=16, nprobe=16, train_size=1500)
    index.add(ids[:1000], x[:1000])
    assert not index.is_trained
    _, got = index.search(x[:5], 1)
    assert got[:, 0].tolist() == ids[:5].tolist()
    index.save(tmp_path / "staged.idx", applied_seq=1)
    staged, _ = VectorIndex.load(tmp_path / "staged.idx")
    assert not staged.is_trained and len(staged) == 1000
    staged.add(ids[1000:], x[1000:])              # passes train_size: trains, keeps everything
    assert staged.is_trained and len(staged) == len(ids)
    assert staged.stats()["factory"] == "IVF16,SQ8"
    _, got = staged.search(x[:50], 1)
    assert np.mean(got[:, 0] == ids[:50]) >= 0.98


def test_failed_save_keeps_old_snapshot(tmp_path, gallery, monkeypatch):
    ids, x = gallery
    path = tmp_path / "gallery.idx"
    index = VectorIndex(DIM)
    index.add(ids[:100], x[:100])
    index.save(path, applied_seq=1)
    index.add(ids[100:200], x[100:200])

    import facegate.gallery.vectors.snapshot as snapshot

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(snapshot.faiss, "write_index", crash)
    with pytest.raises(OSError):
        index.save(path, applied_seq=2)
    monkeypatch.undo()
    loaded, seq = VectorIndex.load(path)
    assert seq == 1 and len(loaded) == 100
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.idx"]   # no temporary left behind


def test_damaged_snapshot_is_reported(tmp_path, gallery):
    ids, x = gallery
    path = tmp_path / "gallery.idx"
    index = VectorIndex(DIM)
    index.add(ids, x)
    index.save(path, applied_seq=9)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])     # a torn copy
    with pytest.raises(SnapshotError):
        VectorIndex.load(path)
    path.write_bytes(b"not an index")
    with pytest.raises(SnapshotError):
        VectorIndex.load(path)
    with pytest.raises(SnapshotError):
        VectorIndex.load(tmp_path / "missing.idx")


@pytest.mark.parametrize("kind,params", [("flat", {}), ("ivf_sq", {"nlist": 8}), ("ivf_pq", {"nlist": 8, "m": 16}),
                                         ("ivf_pq_refine", {"nlist": 8}), ("hnsw_sq", {"pca": 32}),
                                         ("ivf_sq", {"train_size": 10_000})])      # the last: staged, untrained
def test_snapshot_format_3_layout_and_byte_identical_round_trip(tmp_path, kind, params):
    """Snapshot format 3, without fixtures: MAGIC, the header's length, the JSON header (its
    fields in this order), the FAISS index (ivf_pq_refine: then its codec, its cells, the
    refinement rows' codes and owners), MAGIC; and a loaded snapshot saves to the same bytes.
    A failure here means snapshots already written would no longer load as they are: bump the
    format and refuse the older ones (the gallery then rebuilds) instead of changing it."""
    import io
    import json
    import struct

    import faiss
    dim = 64
    rng = np.random.default_rng(8)
    x = unit(rng.standard_normal((1200, dim)))
    ids = np.arange(1000, 2200, dtype=np.int64)
    index = VectorIndex(dim, kind, **params)
    if kind != "flat" and "train_size" not in params:
        index.train(x)
    index.add(ids, x)
    index.remove(ids[:30])                           # tombstones, where the kind keeps them
    index.add(ids[30:40], x[40:50])                  # replaced entries
    first = tmp_path / "first.idx"
    index.save(first, applied_seq=12)

    data = first.read_bytes()
    assert data[:8] == b"FGVIDX01" and data[-8:] == b"FGVIDX01"
    (hlen,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16:16 + hlen])
    refined = kind == "ivf_pq_refine"
    assert list(header) == ["format", "dim", "kind", "params", "trained", "applied_seq", "ntotal",
                            "faiss_version"] + (["refine_rows"] if refined else [])
    assert header["format"] == 3 and header["kind"] == kind and header["ntotal"] == len(index) == 1170
    assert header["trained"] == index.is_trained and header["params"] == index.params
    body = io.BytesIO(data[16 + hlen:-8])
    indexes = [faiss.read_index(faiss.PyCallbackIOReader(body.read)) for _ in range(3 if refined else 1)]
    stored = {"flat": "IndexIDMap2", "ivf_sq": "IndexIVFScalarQuantizer", "ivf_pq": "IndexIVFPQFastScan",
              "ivf_pq_refine": "IndexPreTransform", "hnsw_sq": "IndexIDMap"}
    assert type(indexes[0]).__name__ == (stored[kind] if index.is_trained else "IndexIDMap2")
    assert indexes[0].ntotal == index._index.ntotal
    rest = body.read()
    if refined:
        codec, cells = indexes[1:]
        assert codec.code_size == index.params["pca"] and cells.ntotal == index.params["nlist"]
        rows = header["refine_rows"]
        assert len(rest) == rows * (codec.code_size + 8)
        owners = np.frombuffer(rest[rows * codec.code_size:], "<i8")      # each row's template id, -1: free
        assert sorted(owners[owners >= 0]) == index.ids().tolist()
    else:
        assert rest == b""

    loaded, seq = VectorIndex.load(first)
    assert seq == 12
    loaded.save(tmp_path / "again.idx", applied_seq=12)
    assert (tmp_path / "again.idx").read_bytes() == data
    before, after = index.search(x[:20], 5), loaded.search(x[:20], 5)
    assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0])


def test_for_size_picks_exact_for_small_and_compressed_for_large():
    assert VectorIndex.for_size(DIM, 5_000).kind == "flat"
    mid = VectorIndex.for_size(DIM, 1_000_000)
    assert mid.kind == "ivf_pq_refine" and mid.params["nlist"] == 4096 and mid.params["nprobe"] == 384
    big = VectorIndex.for_size(DIM, 10_000_000)
    assert big.kind == "ivf_pq_refine" and big.params["nlist"] == 8192 and big.params["nprobe"] == 768
    assert big.params["spill"] == 2
    assert VectorIndex.for_size(DIM, 10, kind="ivf_pq").kind == "ivf_pq"
    assert VectorIndex.for_size(DIM, 10, kind="hnsw_sq").kind == "hnsw_sq"
    with pytest.raises(ValueError):
        VectorIndex(DIM, "lsh")


# ---------------------------------------------------------------- recall on a fitted gallery
@pytest.fixture(scope="module")
def real_pairs(engine, lfw_images):
    """First and second photo of people with several LFW photos, embedded by the real engine."""
    people = sorted(p for p in lfw_images.iterdir() if len(list(p.glob("*.jpg"))) >= 2)[:48]
    photos = []
    for p in people:
        jpgs = sorted(p.glob("*.jpg"))[:2]
        photos += [j.read_bytes() for j in jpgs]
    faces = engine.embed_many(photos)
    first, second = [], []
    for a, b in zip(faces[0::2], faces[1::2]):
        if hasattr(a, "embedding") and hasattr(b, "embedding"):
            first.append(a.embedding)
            second.append(b.embedding)
    assert len(first) >= 40
    return np.array(first, np.float32), np.array(second, np.float32)


def fitted_sample(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Gaussian fitted to real embeddings: their mean and low-rank covariance plus isotropic
    noise carrying the variance the few samples cannot span."""
    rng = np.random.default_rng(seed)
    mu = real.mean(0)
    centred = real - mu
    a = rng.standard_normal((n, len(real))).astype(np.float32) / np.sqrt(len(real) - 1)
    noise_std = float(np.sqrt(centred.var(0).mean()))
    x = mu + a @ centred + noise_std * rng.standard_normal((n, real.shape[1])).astype(np.float32)
    return unit(x)


# Mates of real faces (genuine cosine ~0.4-0.7) are often outside the query's nearest IVF
# cells, so a quarter to a half of the cells is probed, as VectorIndex.for_size does.
@pytest.mark.parametrize("kind,params,planted_min,random_min", [
    ("ivf_sq", {"nlist": 64, "nprobe": 16}, 0.95, 0.7),
    ("ivf_pq", {"nlist": 64, "nprobe": 32, "m": 64}, 0.9, 0.2),
    # PCA to 128 dims drops the isotropic part this fitted sample has in every dimension, so
    # the order of near-tied impostors (random queries) is only partly kept; mates are kept.
    ("hnsw_sq", {"ef_search": 64}, 0.97, 0.5),
    # This fitted sample has isotropic noise in all 512 dimensions (real embeddings span ~160),
    # so nothing is projected away and 4-bit codes of 512-D vectors rank coarsely: a longer
    # shortlist than the default keeps the exact top-1 in it.
    ("ivf_pq_refine", {"nlist": 64, "nprobe": 32, "shortlist": 1000}, 0.97, 0.8),
])
def test_approximate_recall_on_fitted_gallery(real_pairs, kind, params, planted_min, random_min):
    enrolled, probes = real_pairs
    synth = fitted_sample(np.concatenate([enrolled, probes]), 20_000, seed=5)
    ids = np.arange(len(synth), dtype=np.int64)
    planted = 10**9 + np.arange(len(enrolled), dtype=np.int64)
    all_ids, all_x = np.concatenate([ids, planted]), np.concatenate([synth, enrolled])

    # real-looking impostor scores: the fitted synthetic gallery is not trivially far from faces
    synth_scores = (probes @ synth.T)
    real_impostor = (probes @ enrolled.T)[~np.eye(len(enrolled), dtype=bool)]
    assert abs(float(synth_scores.mean()) - float(real_impostor.mean())) < 0.1

    exact = VectorIndex(DIM)
    exact.add(all_ids, all_x)
    approx = VectorIndex(DIM, kind, **params)
    approx.train(fitted_sample(np.concatenate([enrolled, probes]), 5000, seed=6))
    approx.add(all_ids, all_x)

    _, e_ids = exact.search(probes, 1)
    _, a_ids = approx.search(probes, 1)
    assert np.mean(a_ids[:, 0] == e_ids[:, 0]) >= planted_min   # planted queries: same answer
    assert np.mean(e_ids[:, 0] == planted) >= 0.9                # and that answer is the mate

    random_q = fitted_sample(np.concatenate([enrolled, probes]), 200, seed=7)
    _, e_ids = exact.search(random_q, 10)
    _, a_ids = approx.search(random_q, 10)
    recall10 = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(a_ids, e_ids)])
    assert recall10 >= random_min
    stats = approx.stats()
    assert stats["ntotal"] == len(all_ids)
    # ivf_pq_refine on this full-rank sample: 512 B refinement codes, two copies of ~120 B
    # fast-scan codes (the 97 % energy axes of 512) and their ids, cells
    assert stats["bytes_per_vector"] < {"ivf_sq": 600, "ivf_pq": 100, "hnsw_sq": 320, "ivf_pq_refine": 950}[kind]
