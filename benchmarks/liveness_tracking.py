"""The liveness tracker's box model and cost.

    .venv/bin/python -m benchmarks.liveness_tracking fit       # -> facegate/liveness/landmark_box.json
    .venv/bin/python -m benchmarks.liveness_tracking profile   # per-frame cost on the clips as the page sends them

``fit``: on every development clip (../shared/data/face-videos) as the capture page sends it (20
fps, 640 px, JPEG 85), full MTCNN's box on every frame and the 68 points found in it; the box
model (:mod:`facegate.liveness.landmark_box`) is fitted from the points onto the boxes, and its
error is measured leaving each clip out in turn (and for the fast path's boxes, for comparison).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np

from benchmarks._common import REPO, shared_dir, uptime

VIDEOS = shared_dir() / "data" / "face-videos"
BOX_JSON = REPO / "facegate" / "liveness" / "landmark_box.json"


def clips():
    from facegate.liveness.attacks import as_page_sends
    from facegate.liveness.capture import Capture
    for path in sorted(VIDEOS.glob("*.mp4")):
        cap = Capture(max_frames=5000, max_seconds=120)
        cap.add_video(path.read_bytes(), 40_000_000)
        yield path.stem, as_page_sends(cap)


def load(threads: int = 1):
    from facegate.config import Settings
    from facegate.engine import FaceEngine
    from facegate.liveness.judge import LivenessJudge
    settings = Settings.load(liveness_pad="auto", intra_op_threads=threads)
    engine = FaceEngine.load(settings)
    return settings, engine, LivenessJudge.load(engine, settings)


def fit() -> dict:
    from facegate.liveness.landmark_box import LandmarkBox
    from facegate.liveness.landmarks import grey_of
    _, engine, judge = load()
    mtcnn = getattr(engine.detector, "fallback", engine.detector)
    rows = []
    for name, cap in clips():
        for f in cap.frames:
            bgr = f.bgr
            h, w = bgr.shape[:2]
            scale = min(1.0, 320 / max(h, w))
            small = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            min_face = max(12, int(0.12 * min(small.shape[:2])))
            dm = mtcnn.detect(small, min_face=min_face)
            df = engine.detector.detect(small, min_face=min_face)
            if not dm:
                continue
            bm = max(dm, key=lambda d: d.box[2] - d.box[0]).box / scale
            bf = max(df, key=lambda d: d.box[2] - d.box[0]).box / scale if df else None
            rows.append((name, bm, bf, judge.tracker.landmarker(grey_of(bgr), bm)))
        print(f"{name}: {len(rows)} frames", file=sys.stderr, flush=True)
    names = np.array([r[0] for r in rows])
    err = []
    for name in sorted(set(names)):
        model = LandmarkBox.fit([r[3] for r in rows if r[0] != name], [r[1] for r in rows if r[0] != name])
        err += [np.abs(model(r[3]) - r[1]).max() / (r[1][2] - r[1][0]) for r in rows if r[0] == name]
    fast = [np.abs(r[2] - r[1]).max() / (r[1][2] - r[1][0]) for r in rows if r[2] is not None]
    model = LandmarkBox.fit([r[3] for r in rows], [r[1] for r in rows])
    out = {"command": "python -m benchmarks.liveness_tracking fit", "frames": len(rows), "clips": sorted(set(names)),
           "held_out_error": {"what": "largest |coordinate difference| from full MTCNN's box, in box widths, "
                                      "each clip predicted by a model fitted on the others",
                              "median": round(float(np.median(err)), 4), "p95": round(float(np.percentile(err, 95)), 4)},
           "fast_path_box_error": {"median": round(float(np.median(fast)), 4),
                                   "p95": round(float(np.percentile(fast, 95)), 4)},
           **model.as_dict()}
    BOX_JSON.write_text(json.dumps(out, indent=1) + "\n")
    return {k: v for k, v in out.items() if k != "coef"}


def profile() -> dict:
    """CPU time per frame of tracking the clips as the page sends them (process time, 1 thread)."""
    _, _, judge = load()
    frames = cpu = 0.0
    stages: dict[str, float] = {}
    for name, cap in clips():
        t0 = time.process_time()
        judge.observe(cap)
        cpu += time.process_time() - t0
        frames += len(cap.frames)
        for k, v in judge.tracker.times.per_frame_ms().items():
            stages[k] = stages.get(k, 0.0) + v * len(cap.frames)
    return {"frames": int(frames), "cpu_ms_per_frame": round(1000 * cpu / frames, 2),
            "stage_ms_per_frame": {k: round(v / frames, 2) for k, v in stages.items()}, "uptime": uptime()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["fit", "profile"])
    args = ap.parse_args()
    print(json.dumps(fit() if args.what == "fit" else profile(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
