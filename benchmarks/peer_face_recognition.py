"""Peer worker: PyPI ``face_recognition`` (dlib) on one photo at a time, for side-by-side runs.

Runs under the PEER's Python (a separate venv with ``dlib-bin``, ``face_recognition_models``
and ``face_recognition``), never the project's. It reads one JSON request per line on stdin and
answers one JSON line on stdout, so the benchmark can interleave it photo by photo with facegate:

    {"path": "a.jpg", "upsample": 1, "fallback_box": [top, right, bottom, left] | null}
    -> {"path", "faces", "box", "encoding" (128 floats) | null, "fallback": bool,
        "times": {"decode", "detect", "encode"}, "cpu"}   (seconds; cpu = process CPU time)

The face kept is the one nearest the image centre (as the peer's own LFW figure in
MODEL-FACTS.md). ``fallback_box``: when the detector finds nothing, encode this box instead and
say so (a lenient variant; the strict accuracy counts such photos as failures).
"""
from __future__ import annotations

import json
import sys
import time

import face_recognition
import numpy as np


def central(locations, shape):
    cy, cx = shape[0] / 2, shape[1] / 2
    dist = [np.hypot((l + r) / 2 - cx, (t + b) / 2 - cy) for t, r, b, l in locations]
    return locations[int(np.argmin(dist))]


def handle(req: dict) -> dict:
    c0 = time.process_time()
    t0 = time.perf_counter()
    img = face_recognition.load_image_file(req["path"])
    t1 = time.perf_counter()
    locations = face_recognition.face_locations(img, number_of_times_to_upsample=int(req.get("upsample", 1)))
    t2 = time.perf_counter()
    out = {"path": req["path"], "faces": len(locations), "box": None, "encoding": None, "fallback": False}
    box = central(locations, img.shape) if locations else None
    if box is None and req.get("fallback_box"):
        box, out["fallback"] = tuple(req["fallback_box"]), True
    if box is not None:
        enc = face_recognition.face_encodings(img, known_face_locations=[box])
        out["box"] = list(map(int, box))
        out["encoding"] = [float(v) for v in enc[0]] if enc else None
    t3 = time.perf_counter()
    out["times"] = {"decode": t1 - t0, "detect": t2 - t1, "encode": t3 - t2}
    out["cpu"] = time.process_time() - c0
    return out


def main() -> int:
    print(json.dumps({"ready": True, "dlib": face_recognition.api.dlib.__version__}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            out = handle(req)
        except Exception as exc:  # report, keep serving: one bad photo must not end the run
            out = {"path": req.get("path"), "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
