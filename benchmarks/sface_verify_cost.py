"""What the second opinion costs per request: verify and identify through the workflows, with the
engine's second opinion on and off, interleaved, on NUAA's 640x480 webcam frames (1 thread).

    .venv/bin/python -m benchmarks.sface_verify_cost [--rounds 60]

verify never embeds with SFace (1:1 does not use it), so its two columns must agree within noise;
identify embeds the probe a second time (the fused rule). "second embedding" is what 1:1 would pay
per request if it used the second opinion too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import shared_dir, uptime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args(argv)
    from facegate.config import Settings
    from facegate.engine import FaceEngine
    from facegate.gallery.gallery import Gallery
    from facegate.workflows import verification
    from facegate.workflows.context import WorkflowContext

    frames = sorted((shared_dir() / "data" / "nuaa" / "live").glob("*/*.jpg"))
    people = sorted({p.parent.name for p in frames})
    work = Path(tempfile.mkdtemp(prefix="fg-verify-cost-"))
    base = dataclasses.replace(Settings.load(data_dir=str(work), intra_op_threads=1), index_sync_s=3600.0)
    engines = {mode: FaceEngine.load(dataclasses.replace(base, second_opinion=mode == "on")) for mode in ("off", "on")}
    gallery = Gallery(base, engines["on"])
    enrolled = {}
    for person in people:
        gallery.store.add_subject(person)
        for p in frames:
            if p.parent.name == person:
                try:
                    gallery.enrol(person, p.read_bytes(), allow_duplicate=True)
                    enrolled[person] = p
                    break
                except Exception:
                    continue
    probes = []
    for p in frames:
        if p.parent.name in enrolled and p != enrolled[p.parent.name]:
            try:
                engines["on"].face(p.read_bytes())
                probes.append(p)
            except Exception:
                continue
    probes = probes[: args.rounds]
    ctx = {mode: WorkflowContext(dataclasses.replace(base, second_opinion=mode == "on"), engines[mode], gallery)
           for mode in engines}
    times: dict[str, list[float]] = {k: [] for k in ("verify_off", "verify_on", "identify_off", "identify_on",
                                                     "second_embedding")}
    load_before = uptime()
    for p in probes * 2:
        data = p.read_bytes()
        for mode in ("off", "on"):
            t = time.perf_counter()
            verification.verify(ctx[mode], p.parent.name, data)
            times[f"verify_{mode}"].append(time.perf_counter() - t)
            t = time.perf_counter()
            verification.identify(ctx[mode], data, 5)
            times[f"identify_{mode}"].append(time.perf_counter() - t)
        face = engines["on"].face(data)
        t = time.perf_counter()
        engines["on"].second_embedding(face)
        times["second_embedding"].append(time.perf_counter() - t)
    gallery.close()
    out = {k: {"p50_ms": round(1000 * float(np.median(v)), 2), "mean_ms": round(1000 * float(np.mean(v)), 2),
               "n": len(v)} for k, v in times.items()}
    out |= {"uptime_before": load_before, "uptime_after": uptime(), "probes": len(probes), "subjects": len(enrolled)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
