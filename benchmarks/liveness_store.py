"""What keeping liveness sessions in the database costs per frames upload, against holding the
capture in the process's memory (the store before sessions moved to the database).

    python -m benchmarks.liveness_store [--postgres URL] [--uploads 30] [--frames 25]

One upload = ``--frames`` JPEG frames of a 640x480 live clip (face-videos/d18.mp4, re-encoded
at quality 90 as a capture page sends them). Timed, interleaved upload by upload so machine load
hits all alike, single thread:

- ``memory``: what the in-memory store did: decode each frame into the capture held in RAM;
- ``sqlite`` / ``postgresql``: what a replica does now: check and keep each frame (decode within
  the frame limits, kept as sent when within 640 px), encrypt it with the data key and append it
  to the session's rows in one transaction with the nonce, deadline and budget checks.

Also the judge's side: reading a 150-frame capture back (decrypt + the per-frame decode the judge
does while it observes) against frames already decoded in memory. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import cv2

from benchmarks._common import shared_dir, uptime
from facegate.config import Settings
from facegate.liveness.attacks import segment
from facegate.liveness.capture import Capture, stored_jpeg
from facegate.liveness.sessions import LivenessSessions
from facegate.storage.store import Store


def clip_frames(count: int) -> list[tuple[float, bytes]]:
    cap = Capture(max_frames=1000, max_seconds=60)
    cap.add_video((shared_dir() / "data" / "face-videos" / "d18.mp4").read_bytes(), 40_000_000)
    frames = segment(cap, 1.0, 1.0 + count / 25 + 1).frames[:count]
    return [(f.t, cv2.imencode(".jpg", f.bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()) for f in frames]


def store_on(url: str, folder: str, settings: dict) -> LivenessSessions:
    s = Settings.load(data_dir=folder, database_url=url, data_key="", data_key_file="", **settings)
    store = Store.open(s)
    return LivenessSessions(store.db, store.keys, s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", help="a PostgreSQL URL (scripts/start-postgres.sh prints one); default: SQLite only")
    ap.add_argument("--uploads", type=int, default=30)
    ap.add_argument("--frames", type=int, default=25)
    args = ap.parse_args()
    frames = clip_frames(args.frames)
    s = Settings.load()
    limits = dict(liveness_open_sessions=10_000, liveness_key_bytes=1 << 40)
    stores = {"sqlite": store_on("", tempfile.mkdtemp(prefix="fg-lstore-"), limits)}
    if args.postgres:
        stores["postgresql"] = store_on(args.postgres, tempfile.mkdtemp(prefix="fg-lstore-pg-"), limits)
    times: dict[str, list[float]] = {"memory": [], **{name: [] for name in stores}}
    for i in range(args.uploads + 2):
        for name in times:
            t0 = time.perf_counter()
            if name == "memory":
                Capture(1000, 60).add_jpegs(frames, s.max_image_bytes, s.liveness_max_frame_pixels)
            else:
                store = stores[name]
                session = store.create(owner="bench")
                kept = [(t, stored_jpeg(data, s.max_image_bytes, s.liveness_max_frame_pixels)) for t, data in frames]
                store.add_frames(session.id, kept, session.nonce, "bench")
            if i >= 2:                                  # the first two warm caches and connections
                times[name].append(time.perf_counter() - t0)
    upload = {name: round(1000 * statistics.median(v), 2) for name, v in times.items()}

    read: dict[str, float] = {}
    long = clip_frames(150)
    memory = Capture(1000, 60)
    memory.add_jpegs(long, s.max_image_bytes, s.liveness_max_frame_pixels)
    t0 = time.perf_counter()
    for f in memory.frames:
        f.bgr
    read["memory"] = round(1000 * (time.perf_counter() - t0), 1)
    for name, store in stores.items():
        session = store.create(owner="bench-read")
        store.add_frames(session.id, long, session.nonce, "bench-read")
        t0 = time.perf_counter()
        for f in store.capture_of(session.id).frames:
            f.bgr
        read[name] = round(1000 * (time.perf_counter() - t0), 1)
    print(json.dumps({
        "frames_per_upload": args.frames, "uploads": args.uploads,
        "upload_median_ms": upload,
        "added_per_upload_ms": {name: round(upload[name] - upload["memory"], 2) for name in stores},
        "added_per_frame_ms": {name: round((upload[name] - upload["memory"]) / args.frames, 3) for name in stores},
        "read_150_frames_ms": read, "machine": uptime()}, indent=2))


if __name__ == "__main__":
    main()
