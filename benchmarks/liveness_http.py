"""Liveness over HTTP as a phone sends it: verdicts, the wait after the last action, server CPU.

    .venv/bin/python -m benchmarks.liveness_http verdicts            # every live window, per challenge
    .venv/bin/python -m benchmarks.liveness_http capacity --phones 1 4 [--checkout DIR]

Each capture is a window of a development clip as the capture page sends it (20 fps, 640 px,
JPEG 85), paced in real time: a chunk of 12 frames goes out when its last frame is due, one
request at a time, the rest with ``complete=true`` at the end, as ``uploader.js`` does.

- ``verdicts``: every window of ``benchmarks/liveness.py``'s WINDOWS through a real ``facegate
  serve`` (one server per challenge, FACEGATE_LIVENESS_CHALLENGE), with the reversed challenge
  for windows of two actions; the smallest passive margin over the threshold.
- ``capacity``: ``--phones`` concurrent phones each sending d0 0-3.2 s (a blink) ``--captures``
  times; the server process's CPU time (``/proc``) per second of capture, captures judged per
  hour per core, and the wait from the capture's last frame to the verdict (p50, p95).
  ``--checkout`` serves another checkout's facegate (e.g. a worktree of an earlier commit).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks._common import REPO, ServerProcess, create_key, pct, uptime

CHUNK = 12


def page_frames(clip: str, start: float, end: float) -> list[tuple[float, bytes]]:
    from benchmarks.liveness import load_clip
    from facegate.liveness.attacks import segment
    cap = segment(load_clip(clip), start, end)
    import cv2
    return [(f.t, cv2.imencode(".jpg", f.bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()) for f in cap.frames]


def send_capture(url: str, key: str, frames: list[tuple[float, bytes]], paced: bool = True) -> dict:
    with httpx.Client(timeout=120, headers={"X-API-Key": key}) as client:
        s = client.post(url + "/v1/liveness/sessions", json={}).json()
        base = url + f"/v1/liveness/sessions/{s['session_id']}"
        t0 = time.perf_counter()

        def post(part, complete):
            data = {"nonce": s["nonce"], "timestamps": ",".join(f"{t:.4f}" for t, _ in part)}
            if complete:
                data["complete"] = "true"
            r = client.post(base + "/frames", data=data,
                            files=[("frames", (f"{i}.jpg", b, "image/jpeg")) for i, (_, b) in enumerate(part)])
            r.raise_for_status()
            return r.json()

        sent = 0
        while len(frames) - sent > CHUNK:
            part = frames[sent:sent + CHUNK]
            if paced:
                time.sleep(max(0.0, part[-1][0] - (time.perf_counter() - t0)))
            post(part, False)
            sent += len(part)
        if paced:
            time.sleep(max(0.0, frames[-1][0] - (time.perf_counter() - t0)))
        ended = time.perf_counter()
        result = post(frames[sent:], True)
        result["wait_ms"] = round(1000 * (time.perf_counter() - ended), 1)
        return result


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server(folder: str, checkout: Path, **settings) -> tuple[ServerProcess, str]:
    srv = ServerProcess(folder, checkout=checkout, **settings)
    key = create_key(srv.env, "admin", checkout=checkout)["key"]
    return srv.start(), key


def verdicts(checkout: Path) -> list[str]:
    from benchmarks.liveness import WINDOWS
    lines = ["| clip | window (s) | challenge | live | reasons | passive | identity min | reversed rejected | wait (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    by_challenge: dict[str, list] = {}
    for clip, a, b, ch in WINDOWS:
        by_challenge.setdefault(",".join(ch), []).append((clip, a, b, ch))
        if len(ch) > 1:
            by_challenge.setdefault(",".join(reversed(ch)), []).append((clip, a, b, ch))
    rows, reversed_rejected, margins, refused, rev_accepted = {}, {}, [], 0, 0
    for challenge, windows in by_challenge.items():
        with tempfile.TemporaryDirectory() as folder:
            srv, key = server(folder, checkout, liveness_challenge=challenge)
            try:
                for clip, a, b, ch in windows:
                    res = send_capture(srv.url, key, page_frames(clip, a, b))
                    if ",".join(ch) == challenge:
                        refused += not res["live"]
                        margins.append(res["passive"].get("score", 0) - res["passive"].get("threshold", 0.5))
                        rows[(clip, a, b)] = [clip, f"{a:g}-{b:g}", challenge, res["live"], " ".join(res["reasons"]) or "-",
                                           res["passive"].get("score"), res.get("identity", {}).get("min_similarity"),
                                           "-", res["wait_ms"]]
                    else:
                        rev_accepted += res["live"]
                        reversed_rejected[(clip, a, b)] = not res["live"]
                    print(f"{clip} {a}-{b} {challenge}: {res['live']} {res['reasons']}", file=sys.stderr, flush=True)
            finally:
                srv.stop()
    for k, rejected in reversed_rejected.items():
        rows[k][7] = rejected
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows.values()]
    lines.append(f"\n**BPCER over HTTP: {refused}/{len(rows)}**; reversed answers accepted: {rev_accepted}/"
                 f"{sum(len(w[3]) > 1 for w in WINDOWS)}; smallest passive margin over the threshold: "
                 f"{min(margins):.3f}.")
    return lines


def capacity(checkout: Path, phones: list[int], captures: int) -> list[str]:
    frames = page_frames("d0", 0.0, 3.2)
    seconds = frames[-1][0] - frames[0][0]
    lines = ["| phones | captures | passed | server CPU s per capture second | captures / hour / core | "
             "wait p50 (ms) | wait p95 (ms) |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        srv, key = server(folder, checkout, liveness_challenge="blink", rate_limit_per_minute=100000)
        try:
            send_capture(srv.url, key, frames, paced=False)            # warm-up
            for n in phones:
                results: list[dict] = []
                lock = threading.Lock()

                def phone():
                    for _ in range(captures):
                        r = send_capture(srv.url, key, frames)
                        with lock:
                            results.append(r)
                c0 = cpu_seconds(srv.proc.pid)
                threads = [threading.Thread(target=phone) for _ in range(n)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                cpu = cpu_seconds(srv.proc.pid) - c0
                per_second = cpu / (len(results) * seconds)
                waits = [r["wait_ms"] for r in results]
                lines.append(f"| {n} | {len(results)} | {sum(r['live'] for r in results)} | {per_second:.3f} | "
                             f"{3600 / (per_second * seconds):.0f} | {statistics.median(waits):.0f} | {pct(waits, 95):.0f} |")
                print(lines[-1], file=sys.stderr, flush=True)
        finally:
            srv.stop()
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["verdicts", "capacity"])
    ap.add_argument("--phones", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--captures", type=int, default=5)
    ap.add_argument("--checkout", default=str(REPO))
    ap.add_argument("--out")
    args = ap.parse_args()
    checkout = Path(args.checkout).resolve()
    head = [f"`python -m benchmarks.liveness_http {' '.join(sys.argv[1:])}` serving {checkout.name} "
            f"({uptime()})\n"]
    lines = head + (verdicts(checkout) if args.what == "verdicts" else capacity(checkout, args.phones, args.captures))
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
