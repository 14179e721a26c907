"""Readers for labelled verification pairs: LFW ``pairs.txt`` and deepface ``master.csv``.

A CSV may also carry ``identity_x`` / ``identity_y`` columns (what :func:`write_pairs_csv`
writes, e.g. for the NUAA frames): the identities then let calibration and TAR use every
cross-identity pair of the photos, as for LFW.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    a: str           # image path relative to the images folder
    b: str
    same: bool
    fold: int


@dataclass
class PairSet:
    pairs: list[Pair]
    folds: int
    identities: dict[str, str] | None   # image -> identity, when the format tells it

    @property
    def images(self) -> list[str]:
        return sorted({p.a for p in self.pairs} | {p.b for p in self.pairs})


def _lfw_image(name: str, num: str) -> str:
    return f"{name}/{name}_{int(num):04d}.jpg"


def read_lfw_pairs(path: Path) -> PairSet:
    lines = [l.split() for l in Path(path).read_text().splitlines() if l.strip()]
    folds, per = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != folds * 2 * per:
        raise ValueError(f"{path}: header says {folds} folds x {2 * per} pairs, found {len(body)} lines")
    pairs, ids = [], {}
    for i, row in enumerate(body):
        fold = i // (2 * per)
        if len(row) == 3:
            a, b = _lfw_image(row[0], row[1]), _lfw_image(row[0], row[2])
            ids[a] = ids[b] = row[0]
            pairs.append(Pair(a, b, True, fold))
        elif len(row) == 4:
            a, b = _lfw_image(row[0], row[1]), _lfw_image(row[2], row[3])
            ids[a], ids[b] = row[0], row[2]
            pairs.append(Pair(a, b, False, fold))
        else:
            raise ValueError(f"{path}: line {i + 2} is not an LFW pair: {' '.join(row)}")
    return PairSet(pairs, folds, ids)


def read_deepface_csv(path: Path, folds: int = 10) -> PairSet:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    n = len(rows)
    pairs = []
    ids: dict[str, str] | None = {} if rows and "identity_x" in rows[0] and "identity_y" in rows[0] else None
    for i, r in enumerate(rows):
        decision = r["Decision"].strip().lower()
        if decision not in ("yes", "no"):
            raise ValueError(f"{path}: row {i + 2}: Decision must be Yes or No")
        a, b = r["file_x"].strip(), r["file_y"].strip()
        pairs.append(Pair(a, b, decision == "yes", i * folds // n))
        if ids is not None:
            ids[a], ids[b] = r["identity_x"].strip(), r["identity_y"].strip()
    return PairSet(pairs, folds, ids)


def write_pairs_csv(path: str | Path, pairs: list[tuple[str, str]], identities: dict[str, str]) -> Path:
    """A pair file ``read_pairs`` reads: ``file_x,file_y,Decision,identity_x,identity_y`` (the
    decision from the identities)."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_x", "file_y", "Decision", "identity_x", "identity_y"])
        for a, b in pairs:
            w.writerow([a, b, "Yes" if identities[a] == identities[b] else "No", identities[a], identities[b]])
    return path


def read_pairs(path: str | Path) -> PairSet:
    path = Path(path)
    head = path.read_text().splitlines()[0] if path.exists() else ""
    if path.suffix.lower() == ".csv" or "file_x" in head:
        return read_deepface_csv(path)
    return read_lfw_pairs(path)
