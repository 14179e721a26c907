"""Operating points: similarity thresholds calibrated at target false-match rates.

A table is made by ``facegate calibrate`` from impostor scores (every cross-identity pair of one
or more labelled photo sets) and shipped for the default pack as ``calibration/<pack>.json``;
operators recalibrate on their own population and put the table beside their pack as
``calibration.json``.

**Several sets** (``calibrate --pairs A --images DA --pairs B --images DB``): per target FMR the
strictest of the sets' own thresholds, so the stated FMR holds on each set (each set's measured
FMR and FNMR at it are recorded under ``by_set``).

**Populations**: a table may be named for a population (``calibrate --population NAME``):
``calibration-NAME.json`` beside the pack, or ``calibration/<pack>-NAME.json`` shipped; the
deployment's ``population`` setting (``FACEGATE_POPULATION``) selects it, and the unnamed table
is used when it is empty.

**Fused tables** (``<pack>-fused-<model>.json``, loaded with ``variant="fused-<model>"``): the
points of the 1:N rule that rescores a shortlist with the mean of the pack's embedder's and its
second opinion's cosines (``benchmarks/sface_fused_table.py`` makes it). They are a separate file
so the 1:1 table's entries are never touched by it. Their ``identify_fmr`` key is the fused rule's
1:N default point: a search at the service's 1:N point (``Settings.identify_fmr``) is decided at
the stricter of the two (``facegate.gallery.second_opinion.decision_fmr``).

**Quality bands** (``calibrate --quality-split Q``): the table also holds ``quality_bands``, a
table for probes of quality under Q and one for the rest, each calibrated on the ordered
(enrolment, probe) pairs whose probe falls in the band. A lookup that gives the probe's quality
gets its band's threshold; one without a quality gets ``points`` (all probes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from facegate.errors import FacegateError

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


def round_up(t: float, digits: int = 6) -> float:
    """``t`` to ``digits`` decimals, never below ``t`` (a threshold rounded down could let the
    impostor score just under it through)."""
    r = round(t, digits)
    while r < t:
        r = round(r + 10.0 ** -digits, digits)
    return r


def combine_tables(sets: list[tuple[str, np.ndarray, np.ndarray]], fmrs=TARGET_FMRS) -> list[dict]:
    """One table from several (name, genuine, impostor) score sets: per target FMR the strictest
    (highest) of the sets' thresholds; ``by_set`` holds each set's own threshold and its measured
    FMR and FNMR at the chosen one; ``measured_fmr`` / ``fnmr`` are the worst of the sets."""
    own = {name: compute_table(g, i, fmrs) for name, g, i in sets}
    points = []
    for k, fmr in enumerate(fmrs):
        decider = max(own, key=lambda n: own[n][k]["threshold"])
        t = own[decider][k]["threshold"]
        by_set = {}
        for name, g, i in sets:
            g, i = np.asarray(g, np.float64), np.asarray(i, np.float64)
            by_set[name] = {"own_threshold": own[name][k]["threshold"], "impostor_pairs": int(i.size),
                            "genuine_pairs": int(g.size), "measured_fmr": float((i >= t).mean()) if i.size else None,
                            "fnmr": float((g < t).mean()) if g.size else None, "reliable": own[name][k]["reliable"]}
        fmrs_measured = [v["measured_fmr"] for v in by_set.values() if v["measured_fmr"] is not None]
        fnmrs = [v["fnmr"] for v in by_set.values() if v["fnmr"] is not None]
        points.append({"fmr": fmr, "threshold": t, "measured_fmr": max(fmrs_measured) if fmrs_measured else None,
                       "fnmr": max(fnmrs) if fnmrs else None,
                       "reliable": all(v["reliable"] for v in by_set.values()), "decided_by": decider,
                       "by_set": by_set})
    return points


def compute_table(genuine: np.ndarray, impostor: np.ndarray, fmrs=TARGET_FMRS) -> list[dict]:
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    points = []
    for fmr in fmrs:
        resolvable = fmr * impostor.size >= 1
        t = round_up(threshold_at_fmr(impostor, fmr))
        points.append({
            "fmr": fmr,
            "threshold": t,
            "measured_fmr": float((impostor >= t).mean()),
            "fnmr": float((genuine < t).mean()) if genuine.size else None,
            "reliable": bool(fmr * impostor.size >= 10),
            **({} if resolvable else {"note": "fewer than 1/FMR impostor pairs: threshold is the maximum seen"}),
        })
    return points


def _pick(points: list[dict], fmr: float) -> dict:
    usable = [p for p in points if p["fmr"] <= fmr * (1 + 1e-9)]
    return max(usable, key=lambda p: p["fmr"]) if usable else min(points, key=lambda p: p["fmr"])


@dataclass
class OperatingPoints:
    points: list[dict]
    source: str
    quality_bands: tuple[dict, ...] = ()   # {"min_quality", "max_quality" (exclusive, None: open), "points"}
    identify_fmr: float | None = None      # a fused table's 1:N default point (its "identify_fmr" key)

    def band_for(self, quality: float | None) -> dict | None:
        """The quality band a probe of ``quality`` falls in (None: no bands, or no quality given)."""
        if quality is None:
            return None
        for band in self.quality_bands:
            hi = band.get("max_quality")
            if quality >= band["min_quality"] and (hi is None or quality < hi):
                return band
        return None

    def threshold_for(self, fmr: float, quality: float | None = None) -> tuple[float, float]:
        """(threshold, fmr) of the calibrated point with the largest FMR not above ``fmr``;
        the strictest point when the request is stricter than any. With a probe ``quality`` and
        quality bands in the table, the point comes from the probe's band."""
        band = self.band_for(quality)
        point = _pick(band["points"] if band else self.points, fmr)
        return float(point["threshold"]), float(point["fmr"])

    def source_for(self, quality: float | None = None) -> str:
        """The table's name, with the quality band when one applies (``...json#quality<0.5``)."""
        band = self.band_for(quality)
        if band is None:
            return self.source
        lo, hi = band["min_quality"], band.get("max_quality")
        return f"{self.source}#quality{'<' + format(hi, 'g') if hi is not None else '>=' + format(lo, 'g')}"

    def fmr_for_score(self, score: float) -> float | None:
        """The smallest calibrated FMR whose threshold the score reaches (None below all)."""
        reached = [p["fmr"] for p in self.points if score >= p["threshold"]]
        return min(reached) if reached else None

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "OperatingPoints":
        return cls(data["points"], source, tuple(data.get("quality_bands", ())), data.get("identify_fmr"))

    @classmethod
    def from_file(cls, path: Path | str) -> "OperatingPoints":
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))

    @classmethod
    def for_pack(cls, pack, variant: str | None = None, population: str | None = None) -> "OperatingPoints | None":
        """The pack's table: ``calibration[-variant][-population].json`` in the pack folder, else
        the one shipped for the default pack (``variant`` "document": one side an ID-card chip
        photo; ``population``: a population's table, see the module docstring). A named
        population without a table is an error, never a silent fallback."""
        suffix = "".join(f"-{x}" for x in (variant, population) if x)
        own = pack.path / f"calibration{suffix}.json"
        if own.exists():
            return cls.from_file(own)
        builtin = resources.files("facegate") / "calibration" / f"{pack.manifest.get('pack', '')}{suffix}.json"
        if builtin.is_file():
            data = json.loads(builtin.read_text())
            embedder = pack.entry("fr_feature")["source"]["upstream_sha256"] if pack.has("fr_feature") else None
            if data.get("embedder_upstream_sha256") in (None, embedder):
                return cls.from_dict(data, f"facegate/calibration/{builtin.name}")
        if population and not variant:
            raise FacegateError("model_unavailable", f"no calibration table for population {population!r}: neither {own} nor "
                             f"facegate/calibration/{pack.manifest.get('pack', '')}{suffix}.json; "
                             f"make one with `facegate calibrate --population {population} ...`")
        return None


def populations(pack) -> list[str]:
    """Population names with a table for ``pack`` (in the pack folder or shipped)."""
    names = {p.stem[len("calibration-"):] for p in pack.path.glob("calibration-*.json")}
    prefix = f"{pack.manifest.get('pack', '')}-"
    for entry in (resources.files("facegate") / "calibration").iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(".json"):
            names.add(entry.name[len(prefix):-len(".json")])
    return sorted(n for n in names - {"document"} if not n.startswith("fused-"))
