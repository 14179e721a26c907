"""The snapshot file of a vector index (format 3).

Layout, in order: ``MAGIC``; the header's length (little-endian uint64); the header, UTF-8
JSON ``{"format", "dim", "kind", "params", "trained", "applied_seq", "ntotal",
"faiss_version"}`` plus the sections' own fields (ivf_pq_refine: ``"refine_rows"``); the body,
written by the index's store (:meth:`write`): FAISS indexes in FAISS's own format and raw
little-endian arrays; ``MAGIC`` again, as a trailer, so that a truncated file is detected
before its body is parsed. Decisions: the header is JSON so that a snapshot can be inspected
and its parameters read without FAISS; a parameter added since a snapshot was written takes
its default on load (so the header need not change with every new parameter); a change of
what a kind's body means bumps ``FORMAT`` and refuses the older snapshots of that kind, and
the gallery then rebuilds the index from the database.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import struct
from pathlib import Path
from typing import Callable, Iterator

import faiss
import numpy as np

from facegate.storage.private import private_dir, replaced_atomically

MAGIC = b"FGVIDX01"
FORMAT = 3      # 3: ivf_pq_refine cells in the PCA space, SOAR spill (2: cells in the scanned
                # axes; 1: the IVF scanned the raw projection)
_LENGTH = struct.Struct("<Q")


class SnapshotError(Exception):
    """A snapshot file is missing, truncated or not a facegate index; rebuild from the database."""


class Writer:
    """The body of a snapshot being written: FAISS indexes and raw arrays, in order."""

    def __init__(self, f: io.BufferedWriter):
        self._f = f

    def index(self, index: faiss.Index) -> None:
        faiss.write_index(index, faiss.PyCallbackIOWriter(self._f.write))

    def array(self, values: np.ndarray, dtype=None) -> None:
        self._f.write(memoryview(np.ascontiguousarray(values, dtype=dtype)).cast("B"))


class Body:
    """The body of a snapshot being read, bounded at the trailer: FAISS never reads into it."""

    def __init__(self, f: io.BufferedReader, length: int, path: Path):
        self._f = f
        self._left = length
        self.path = path

    def read(self, n: int) -> bytes:
        n = min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def index(self) -> faiss.Index:
        try:
            return faiss.read_index(faiss.PyCallbackIOReader(self.read))
        except RuntimeError as exc:
            raise SnapshotError(f"{self.path}: damaged index body: {exc}") from exc

    def array(self, dtype, count: int) -> np.ndarray:
        """``count`` values read straight into a new array (no intermediate copy)."""
        out = np.empty(count, dtype=dtype)
        buf = memoryview(out).cast("B")
        want = min(len(buf), self._left)
        got = 0
        while got < want:
            n = self._f.readinto(buf[got:want])
            if not n:
                break
            got += n
        self._left -= got
        if got != out.nbytes:
            raise SnapshotError(f"{self.path}: truncated refinement section")
        return out


def write(path, meta: dict, sections: dict, body: Callable[[Writer], None], wrap=None) -> None:
    """Write a snapshot atomically: a temporary file beside ``path`` (mode 0600) is written,
    fsynced and renamed over it, so a crash leaves either the old snapshot or the new one.
    ``meta``: the header's fields from ``dim`` to ``ntotal``; ``sections``: the body's own
    header fields; ``wrap(file)``: a writer the bytes go through on their way to the file (the
    gallery seals snapshots with the data key: :mod:`facegate.storage.sealed`)."""
    path = Path(path)
    private_dir(path.parent)
    header = json.dumps({"format": FORMAT, **meta, "faiss_version": faiss.__version__, **sections}).encode()
    with replaced_atomically(path) as raw:
        f = wrap(raw) if wrap is not None else raw
        f.write(MAGIC + _LENGTH.pack(len(header)) + header)
        body(Writer(f))
        f.write(MAGIC)
        if f is not raw:
            f.close()


@contextlib.contextmanager
def read(path, unwrap=None) -> Iterator[tuple[dict, Body]]:
    """Open a snapshot: its header and its body, to be read while the context is open.
    ``unwrap(file)``: a seekable reader of what :func:`write`'s ``wrap`` wrote.
    Raises :class:`SnapshotError` when the file is missing, is not a snapshot, has a damaged
    header, is an ivf_pq_refine snapshot of a format before 3, or is truncated."""
    path = Path(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError as exc:
        raise SnapshotError(f"no index snapshot at {path}") from exc
    with raw:
        f = unwrap(raw) if unwrap is not None else raw
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        head = f.read(len(MAGIC) + _LENGTH.size)
        if len(head) < len(MAGIC) + _LENGTH.size or head[:len(MAGIC)] != MAGIC:
            raise SnapshotError(f"{path} is not a facegate index snapshot")
        (hlen,) = _LENGTH.unpack(head[len(MAGIC):])
        try:
            meta = json.loads(f.read(hlen))
        except ValueError as exc:
            raise SnapshotError(f"{path}: damaged header") from exc
        if meta.get("kind") == "ivf_pq_refine" and meta.get("format", 1) < 3:
            raise SnapshotError(f"{path}: an ivf_pq_refine snapshot of format {meta.get('format', 1)}, from "
                                "before its cells moved to the PCA space (format 3); rebuild the index "
                                "from the database")
        f.seek(size - len(MAGIC))
        if f.read(len(MAGIC)) != MAGIC:
            raise SnapshotError(f"{path} is truncated")
        f.seek(len(head) + hlen)
        yield meta, Body(f, size - len(MAGIC) * 2 - _LENGTH.size - hlen, path)
