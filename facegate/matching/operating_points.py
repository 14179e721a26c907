"""Operating points: similarity thresholds calibrated at target false-match rates.

A table is made by ``facegate calibrate`` from impostor scores (every cross-identity pair of a
labelled photo set) and shipped for the default pack as ``calibration/<pack>.json``; operators
recalibrate on their own population and put the table beside their pack as ``calibration.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

TARGET_FMRS = (1e-2, 1e-3, 1e-4, 1e-5)


def threshold_at_fmr(impostor: np.ndarray, fmr: float) -> float:
    """Smallest threshold t with (impostor scores >= t) / n <= fmr.

    With n impostor scores sorted descending, at most floor(fmr * n) of them may reach t, so t
    lies just above the (floor(fmr * n) + 1)-th highest score.
    """
    imp = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    if imp.size == 0:
        raise ValueError("no impostor scores")
    allowed = int(np.floor(fmr * imp.size + 1e-9))
    if allowed >= imp.size:
        return float(imp[-1])
    return float(np.nextafter(imp[allowed], np.inf))


def compute_table(genuine: np.ndarray, impostor: np.ndarray, fmrs=TARGET_FMRS) -> list[dict]:
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    points = []
    for fmr in fmrs:
        resolvable = fmr * impostor.size >= 1
        t = threshold_at_fmr(impostor, fmr)
        points.append({
            "fmr": fmr,
            "threshold": round(t, 6),
            "measured_fmr": float((impostor >= t).mean()),
            "fnmr": float((genuine < t).mean()) if genuine.size else None,
            "reliable": bool(fmr * impostor.size >= 10),
            **({} if resolvable else {"note": "fewer than 1/FMR impostor pairs: threshold is the maximum seen"}),
        })
    return points


@dataclass
class OperatingPoints:
    points: list[dict]
    source: str

    def threshold_for(self, fmr: float) -> tuple[float, float]:
        """(threshold, fmr) of the calibrated point with the largest FMR not above ``fmr``;
        the strictest point when the request is stricter than any."""
        usable = [p for p in self.points if p["fmr"] <= fmr * (1 + 1e-9)]
        point = max(usable, key=lambda p: p["fmr"]) if usable else min(self.points, key=lambda p: p["fmr"])
        return float(point["threshold"]), float(point["fmr"])

    def fmr_for_score(self, score: float) -> float | None:
        """The smallest calibrated FMR whose threshold the score reaches (None below all)."""
        reached = [p["fmr"] for p in self.points if score >= p["threshold"]]
        return min(reached) if reached else None

    @classmethod
    def from_file(cls, path: Path | str) -> "OperatingPoints":
        data = json.loads(Path(path).read_text())
        return cls(data["points"], str(path))

    @classmethod
    def for_pack(cls, pack, variant: str | None = None) -> "OperatingPoints | None":
        """The pack's table: ``calibration[-variant].json`` in the pack folder, else the one
        shipped for the default pack (``variant`` "document": one side an ID-card chip photo)."""
        suffix = f"-{variant}" if variant else ""
        own = pack.path / f"calibration{suffix}.json"
        if own.exists():
            return cls.from_file(own)
        builtin = resources.files("facegate") / "calibration" / f"{pack.manifest.get('pack', '')}{suffix}.json"
        if builtin.is_file():
            data = json.loads(builtin.read_text())
            embedder = pack.entry("fr_feature")["source"]["upstream_sha256"] if pack.has("fr_feature") else None
            if data.get("embedder_upstream_sha256") in (None, embedder):
                return cls(data["points"], f"facegate/calibration/{builtin.name}")
        return None
