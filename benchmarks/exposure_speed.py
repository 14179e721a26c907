"""What the exposure work costs per verify: ``engine.face`` end to end, and the normalisation alone.

    .venv/bin/python -m benchmarks.exposure_speed
    (cd /tmp/before && PYTHONPATH=. /path/to/.venv/bin/python -m benchmarks.exposure_speed)   # an older tree

``engine.face`` (policy ``single``, the verify gate; refusals count too) on 48 NUAA frames
(every 4th) and the first 48 lfw-dev photos of people starting with "A", 5 rounds after a
warm-up: median and mean in ms. Where the tree has ``normalise_exposure``, its time on a dark
crop (the first normal face at 40 % of its levels) and on a normal one. On a shared machine
read the median of each photo's fastest round.
"""
from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path

import numpy as np

from benchmarks._common import add_shared_option
from facegate.engine import load_engine
from facegate.errors import FacegateError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shared_option(ap)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    data = Path(args.shared) / "data"
    files = sorted((data / "nuaa" / "live").glob("*/*.jpg"))[::4] + sorted((data / "lfw-dev" / "images").glob("A*/*.jpg"))[:48]
    photos = [f.read_bytes() for f in files]
    engine = load_engine()

    def face(d):
        try:
            return engine.face(d)
        except FacegateError:
            return None
    for d in photos[:5]:
        face(d)
    times = np.zeros((args.rounds, len(photos)))
    for r in range(args.rounds):
        for i, d in enumerate(photos):
            t = time.perf_counter()
            face(d)
            times[r, i] = time.perf_counter() - t
    print(f"engine.face over {len(photos)} photos x {args.rounds}: median {np.median(times) * 1e3:.2f} ms, "
          f"mean {times.mean() * 1e3:.2f} ms; median of each photo's fastest round {np.median(times.min(0)) * 1e3:.2f} ms")
    try:
        from facegate.models.quality import centre_brightness, normalise_exposure
    except ImportError:
        print("this tree has no normalise_exposure")
        return 0
    normal = next(f.aligned for d in photos for f in engine.faces(d, embed=False)[:1] if f.quality.brightness >= 80)
    dark = (normal * 0.4).astype(np.uint8)
    n = 2000
    for name, crop in (("dark", dark), ("other", normal)):
        b = centre_brightness(crop)
        us = timeit.timeit(lambda: normalise_exposure(crop, b), number=n) / n * 1e6
        print(f"normalise_exposure on a {name} crop: {us:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
