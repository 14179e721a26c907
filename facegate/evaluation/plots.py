"""Plots of an evaluation: the DET curve with the operating points marked, and the score histograms.

    data = plot_data(genuine, impostor, points, active)     # numbers only (numpy)
    write_plot("det.png", data)                              # matplotlib (the ``eval`` extra)

:func:`plot_data` computes everything a plot shows (the curve, each calibrated point's measured
FMR / FNMR on these scores, the histograms), so it is tested without looking at pixels; the PNG
carries a summary of it as a ``tEXt`` chunk (key ``facegate``), read back by :func:`read_png_data`.
matplotlib is needed only to draw: ``pip install 'facegate[eval]'``; the service never imports it.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

PNG_KEY = "facegate"
HIST_BINS = np.round(np.arange(-0.40, 1.0001, 0.01), 4)


def error_rates(genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FMR, FNMR) at each threshold, a score ``>= t`` being a match."""
    g, i = np.sort(np.asarray(genuine, float)), np.sort(np.asarray(impostor, float))
    t = np.asarray(thresholds, float)
    fnmr = np.searchsorted(g, t, side="left") / max(g.size, 1)
    fmr = (i.size - np.searchsorted(i, t, side="left")) / max(i.size, 1)
    return fmr, fnmr


def det_curve(genuine: np.ndarray, impostor: np.ndarray, n: int = 400) -> dict:
    """The DET curve at ``n`` thresholds placed evenly in log FMR (where the curve's detail is)
    plus evenly in score, sorted by threshold."""
    g, i = np.asarray(genuine, float), np.asarray(impostor, float)
    lo, hi = float(min(g.min(), i.min())), float(max(g.max(), i.max()))
    fmrs = np.logspace(np.log10(1.0 / max(i.size, 1)), 0, n // 2)
    by_fmr = np.quantile(i, np.clip(1 - fmrs, 0, 1))
    t = np.unique(np.concatenate([by_fmr, np.linspace(lo, hi, n // 2), [hi + 1e-6]]))
    fmr, fnmr = error_rates(g, i, t)
    return {"threshold": t.tolist(), "fmr": fmr.tolist(), "fnmr": fnmr.tolist()}


def plot_data(genuine, impostor, points: list[dict] | None = None, active: dict | None = None,
              title: str = "") -> dict:
    """Everything the plot shows. ``points``: the calibrated table (``fmr``, ``threshold``);
    ``active``: the operating point in use (``threshold``, ``fmr``), marked apart."""
    g, i = np.asarray(genuine, float), np.asarray(impostor, float)
    if g.size == 0 or i.size == 0:
        raise ValueError("a DET curve needs genuine and impostor scores")
    marked = []
    for p in points or []:
        fmr, fnmr = error_rates(g, i, [p["threshold"]])
        marked.append({"target_fmr": p["fmr"], "threshold": p["threshold"], "fmr": float(fmr[0]),
                       "fnmr": float(fnmr[0]), "active": bool(active and p["threshold"] == active["threshold"])})
    act = None
    if active:
        fmr, fnmr = error_rates(g, i, [active["threshold"]])
        act = {"target_fmr": active.get("fmr"), "threshold": active["threshold"], "fmr": float(fmr[0]),
               "fnmr": float(fnmr[0])}
    return {
        "title": title,
        "genuine": int(g.size),
        "impostor": int(i.size),
        "det": det_curve(g, i),
        "points": marked,
        "active": act,
        "histogram": {"bins": HIST_BINS.tolist(),
                      "genuine": np.histogram(np.clip(g, HIST_BINS[0], HIST_BINS[-1]), HIST_BINS)[0].tolist(),
                      "impostor": np.histogram(np.clip(i, HIST_BINS[0], HIST_BINS[-1]), HIST_BINS)[0].tolist()},
    }


def summary(data: dict) -> dict:
    """What the PNG carries: counts, the marked points, the histogram counts and a thinned curve."""
    det = data["det"]
    keep = np.unique(np.linspace(0, len(det["threshold"]) - 1, 60).astype(int))
    return {"title": data["title"], "genuine": data["genuine"], "impostor": data["impostor"],
            "points": data["points"], "active": data["active"], "histogram": data["histogram"],
            "det": {k: [round(det[k][j], 8) for j in keep] for k in det}}


def write_plot(path: str | Path, data: dict) -> Path:
    """Draw ``data`` (:func:`plot_data`) to a PNG: the DET curve (FNMR against FMR, log axes, the
    calibrated points marked and the active one circled) and the genuine / impostor histograms."""
    try:
        import matplotlib
    except ImportError as exc:     # pragma: no cover - the eval extra is missing
        raise RuntimeError("plots need matplotlib: pip install 'facegate[eval]'") from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    floor_fmr, floor_fnmr = 0.5 / data["impostor"], 0.5 / data["genuine"]
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=80)
    det = data["det"]
    ax.plot(np.maximum(det["fmr"], floor_fmr), np.maximum(det["fnmr"], floor_fnmr), color="C0", lw=1.5, label="DET")
    lines = []
    for k, p in enumerate(data["points"], 1):
        xy = (max(p["fmr"], floor_fmr), max(p["fnmr"], floor_fnmr))
        ax.plot(*xy, "s", color="C3", ms=5)
        ax.annotate(str(k), xy, textcoords="offset points", xytext=(4, -10 if k % 2 else 4), fontsize=7, color="C3")
        lines.append(f"{k}: target {p['target_fmr']:g}, t={p['threshold']:.3f}: FMR {p['fmr']:.2g}, FNMR {p['fnmr']:.3f}")
    if lines:
        ax.text(0.02, 0.03, "\n".join(lines), transform=ax.transAxes, fontsize=6.5, va="bottom", color="C3",
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
    if data["active"]:
        a = data["active"]
        ax.plot(max(a["fmr"], floor_fmr), max(a["fnmr"], floor_fnmr), "o", mfc="none", mec="k", ms=11,
                label=f"active: t={a['threshold']:.3f}, FMR {a['fmr']:.2g}, FNMR {a['fnmr']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor_fmr, 1)
    ax.set_ylim(floor_fnmr, 1)
    ax.set_xlabel(f"FMR ({data['impostor']:,} impostor pairs)")
    ax.set_ylabel(f"FNMR ({data['genuine']:,} genuine pairs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"DET {data['title']}".strip(), fontsize=9)
    h = data["histogram"]
    centres = (np.array(h["bins"][:-1]) + np.array(h["bins"][1:])) / 2
    width = h["bins"][1] - h["bins"][0]
    for key, colour in (("impostor", "C3"), ("genuine", "C2")):
        counts = np.array(h[key], float)
        hx.bar(centres, counts / max(counts.sum(), 1), width=width, color=colour, alpha=0.55, label=key)
    for p in data["points"]:
        hx.axvline(p["threshold"], color="k", lw=0.6, ls=":" if not p["active"] else "-")
    hx.set_yscale("log")
    hx.set_xlabel("cosine similarity")
    hx.set_ylabel("fraction of pairs")
    hx.legend(fontsize=7)
    hx.set_title("scores (lines: calibrated thresholds; solid: active)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", metadata={PNG_KEY: json.dumps(summary(data))})
    plt.close(fig)
    return path


def read_png_data(path: str | Path) -> dict:
    """The ``facegate`` summary a PNG written by :func:`write_plot` carries (checks the PNG's
    signature and every chunk's CRC on the way)."""
    raw = Path(path).read_bytes()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, found = 8, None
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind, body = raw[pos + 4:pos + 8], raw[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"{path}: bad CRC in a {kind!r} chunk")
        if kind == b"tEXt" and body.split(b"\0", 1)[0] == PNG_KEY.encode():
            found = json.loads(body.split(b"\0", 1)[1].decode("latin-1"))
        elif kind == b"zTXt" and body.split(b"\0", 1)[0] == PNG_KEY.encode():
            found = json.loads(zlib.decompress(body.split(b"\0", 1)[1][1:]).decode("latin-1"))
        pos += 12 + length
        if kind == b"IEND":
            break
    if found is None:
        raise ValueError(f"{path} carries no {PNG_KEY!r} data")
    return found
