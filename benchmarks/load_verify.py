"""Load benchmark of ``POST /v1/verify`` on a real ``facegate serve`` over loopback.

For each worker count it starts a server (temporary data directory, keys from the CLI), enrols
one LFW subject, then sends ``--requests`` verifications (genuine probe) at each concurrency
level with an async httpx client and reports throughput and p50/p95/p99 latency. It also times
the bare engine on the same probe in this process (decode, detect, align,
embed + cosine against the enrolled template) interleaved call by call with single-client
service calls, so both see the same load from other processes: the service's overhead is
the difference of the medians over the bare median.

    python -m benchmarks.load_verify --workers 1,2 --concurrency 1,2,4,8 --requests 60

Or against a server you started (``--url`` and ``--key``, a kiosk key, plus an enrolled
``--subject``). Needs ../shared or ``$FACEGATE_SHARED`` (LFW) for the photos.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._common import ServerProcess, create_key, pct, shared_dir, uptime
from facegate.matching.decisions import threshold
from facegate.matching.scores import similarity

SHARED = shared_dir() / "data"
LFW = SHARED / "lfw-dev" / "images"
PERSON = "Colin_Powell"


ENGINE_STAGES = ("decode", "detect", "align", "embed")


def scrape(url: str) -> dict:
    """Sums and counts of the service's own latency histograms (all workers)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict = {}
    for m in re.finditer(r'^facegate_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$', text, re.M):
        out[(m[2], m[1])] = float(m[3])
    for m in re.finditer(r'^facegate_request_seconds_(sum|count)\{route="/v1/verify"\} (\S+)$', text, re.M):
        out[("request", m[1])] = float(m[2])
    return out


def server_side(before: dict, after: dict) -> dict:
    """Per verify request, measured inside the server: the whole request, the engine's stages, and the rest."""
    n = after.get(("request", "count"), 0) - before.get(("request", "count"), 0)
    if not n:
        return {}
    mean = {k: 1000 * (after.get((k, "sum"), 0) - before.get((k, "sum"), 0)) / n
            for k in {k for k, _ in after}}
    engine = sum(mean.get(k, 0) for k in ENGINE_STAGES)
    return {"requests": int(n), "request_mean_ms": mean["request"], "engine_mean_ms": engine,
            "stages_mean_ms": {k: round(v, 2) for k, v in sorted(mean.items()) if k != "request"},
            "overhead_pct": 100 * (mean["request"] - engine) / engine}


class BareEngine:
    """The engine alone in this process: probe -> face -> cosine with the enrolled embedding."""

    def __init__(self, enrol: bytes):
        from facegate.config import Settings
        from facegate.engine import FaceEngine

        self.engine = FaceEngine.load(Settings.load())
        self.ref = self.engine.face(enrol, policy="single").embedding

    def call(self, probe: bytes) -> float:
        t0 = time.perf_counter()
        face = self.engine.face(probe, policy="single")
        threshold(self.engine.operating_points, self.engine.settings.target_fmr).matches(
            similarity(face.embedding, self.ref))
        return time.perf_counter() - t0


def overhead(bare: BareEngine, url: str, key: str, subject: str, probe: bytes, n: int) -> dict:
    """Bare engine and service calls interleaved one by one, so both see the same machine load
    (other processes share the CPU): medians and the service's overhead over the engine.

    With one client the server's own request histogram, scraped before and after each call,
    gives every request's server time (``server_p50_ms``: from the request entering the
    middleware to the response, HTTP parsing and the audit write included, the loopback and the
    client excluded) and its stage times."""
    b, s, server, stages = [], [], [], {}
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        for i in range(n + 3):
            tb = bare.call(probe)
            before = scrape(url)
            t0 = time.perf_counter()
            r = client.post("/v1/verify", data={"subject_id": subject}, files={"image": ("p.jpg", probe, "image/jpeg")})
            ts = time.perf_counter() - t0
            r.raise_for_status()
            after = scrape(url)
            if i >= 3:
                b.append(tb)
                s.append(ts)
                server.append(after[("request", "sum")] - before[("request", "sum")])
                for (k, kind), v in after.items():
                    if kind == "sum" and k != "request":
                        stages.setdefault(k, []).append(v - before.get((k, "sum"), 0.0))
    pb, ps = statistics.median(b), statistics.median(s)
    return {"n": n, "bare_p50_ms": 1000 * pb, "service_p50_ms": 1000 * ps,
            "server_p50_ms": 1000 * statistics.median(server), "server_p90_ms": 1000 * pct(server, 90),
            "server_stages_p50_ms": {k: round(1000 * statistics.median(v), 2) for k, v in sorted(stages.items())},
            "overhead_pct": 100 * (ps - pb) / pb,
            "paired_overhead_pct_p50": 100 * statistics.median([(y - x) / x for x, y in zip(b, s)])}


class BenchServer(ServerProcess):
    """A started server on a temporary data directory, with an admin and a kiosk key, whose
    ``/metrics`` sum all its workers."""

    def __init__(self, workers: int, concurrency: int, queue: int, intra_op_threads: int = 0, **settings):
        self.tmp = tempfile.TemporaryDirectory(prefix="facegate-bench-")
        metrics_dir = Path(self.tmp.name) / "metrics"
        metrics_dir.mkdir()
        super().__init__(self.tmp.name, workers, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                         serve_args=("--no-access-log",), log_path=None, rate_limit_per_minute=1000000,
                         inference_concurrency=concurrency, inference_queue=queue,
                         intra_op_threads=intra_op_threads, **settings)
        self.admin = create_key(self.env, "admin")["key"]
        self.kiosk = create_key(self.env, "kiosk")["key"]
        self.start(timeout=120, interval=0.3)

    def enrol(self, subject: str, photo: bytes) -> None:
        h = {"X-API-Key": self.admin}
        httpx.post(self.url + "/v1/subjects", json={"subject_id": subject}, headers=h).raise_for_status()
        httpx.post(self.url + f"/v1/subjects/{subject}/faces", files={"image": ("e.jpg", photo, "image/jpeg")},
                   headers=h, timeout=60).raise_for_status()

    def stop(self, timeout: float = 30) -> None:
        super().stop(timeout)
        self.tmp.cleanup()


async def load(url: str, key: str, subject: str, probe: bytes, concurrency: int, requests: int,
               max_seconds: float) -> dict:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + max_seconds

    async def worker(client: httpx.AsyncClient):
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            sent += 1
            t0 = time.perf_counter()
            r = await client.post("/v1/verify", data={"subject_id": subject},
                                  files={"image": ("p.jpg", probe, "image/jpeg")})
            dt = time.perf_counter() - t0
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200:
                latencies.append(dt)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=120, limits=limits) as client:
        for _ in range(2):  # warm-up: every worker process touches its sessions once
            await client.post("/v1/verify", data={"subject_id": subject}, files={"image": ("p.jpg", probe, "image/jpeg")})
        t0 = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    ok = len(latencies)
    return {"concurrency": concurrency, "requests": sum(codes.values()), "ok": ok, "codes": codes,
            "throughput_rps": ok / wall if wall else 0.0, "p50_ms": 1000 * pct(latencies, 50),
            "p95_ms": 1000 * pct(latencies, 95), "p99_ms": 1000 * pct(latencies, 99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="uvicorn worker counts to start servers with")
    ap.add_argument("--concurrency", default="1,2,4,8", help="concurrent clients")
    ap.add_argument("--requests", type=int, default=60, help="verifications per concurrency level")
    ap.add_argument("--max-seconds", type=float, default=60, help="cap per concurrency level")
    ap.add_argument("--bare", type=int, default=40, help="interleaved bare-engine / service call pairs")
    ap.add_argument("--inference-concurrency", type=int, default=2)
    ap.add_argument("--inference-queue", type=int, default=64)
    ap.add_argument("--intra-op-threads", type=int, default=0, help="onnxruntime threads per session in the server "
                    "(0 = all cores)")
    ap.add_argument("--url", help="benchmark this running server instead of starting servers")
    ap.add_argument("--key", help="kiosk key for --url")
    ap.add_argument("--subject", help="enrolled subject for --url")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--photos", choices=["lfw", "kiosk"], default="lfw",
                    help="lfw: 250x250 LFW crops; kiosk: 640x480 webcam frames (NUAA live)")
    args = ap.parse_args()

    if args.photos == "kiosk":
        # 640x480 webcam frames, the size a kiosk or phone camera sends: one session enrols, another probes
        frames = sorted((SHARED / "nuaa" / "live" / "0001").glob("*.jpg"))
        enrol = next(f for f in frames if "_01_" in f.name).read_bytes()
        probe = next(f for f in frames if "_02_" in f.name).read_bytes()
    else:
        enrol = (LFW / PERSON / f"{PERSON}_0001.jpg").read_bytes()
        probe = (LFW / PERSON / f"{PERSON}_0002.jpg").read_bytes()
    levels = [int(c) for c in args.concurrency.split(",")]
    results = {"uptime_before": uptime(),
               "cpus": os.cpu_count(), "args": vars(args), "runs": [], "overhead": {}}
    bare = BareEngine(enrol)

    if args.url:
        results["overhead"]["given"] = overhead(bare, args.url, args.key, args.subject, probe, args.bare)
        for c in levels:
            r = asyncio.run(load(args.url, args.key, args.subject, probe, c, args.requests, args.max_seconds))
            results["runs"].append({"workers": None, **r})
            print(json.dumps(results["runs"][-1]), flush=True)
    else:
        for w in [int(x) for x in args.workers.split(",")]:
            server = BenchServer(w, args.inference_concurrency, args.inference_queue, args.intra_op_threads)
            try:
                server.enrol("P-BENCH", enrol)
                results["overhead"][str(w)] = overhead(bare, server.url, server.kiosk, "P-BENCH", probe, args.bare)
                print(json.dumps({"workers": w, "overhead": results["overhead"][str(w)]}), flush=True)
                for c in levels:
                    before = scrape(server.url)
                    r = asyncio.run(load(server.url, server.kiosk, "P-BENCH", probe, c, args.requests, args.max_seconds))
                    r["server_side"] = server_side(before, scrape(server.url))
                    results["runs"].append({"workers": w, **r})
                    print(json.dumps(results["runs"][-1]), flush=True)
            finally:
                server.stop()
    results["uptime_after"] = uptime()

    print()
    print(f"before: {results['uptime_before']}\nafter:  {results['uptime_after']}")
    print("| workers | clients | ok/sent | req/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['workers']} | {r['concurrency']} | {r['ok']}/{r['requests']} | {r['throughput_rps']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |")
    print()
    print("Inside the server, per request (means; engine = decode+detect+align+embed):")
    print("| workers | clients | request ms | engine ms | rest ms | overhead | stages ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        ss = r.get("server_side") or {}
        if ss:
            print(f"| {r['workers']} | {r['concurrency']} | {ss['request_mean_ms']:.1f} | {ss['engine_mean_ms']:.1f} | "
                  f"{ss['request_mean_ms'] - ss['engine_mean_ms']:.1f} | {ss['overhead_pct']:+.1f} % | "
                  f"{json.dumps(ss['stages_mean_ms'])} |")
    print()
    print("Interleaved with the bare engine in the benchmark process (1 client; server time per request from the "
          "server's own histogram, scraped around each call):")
    print("| workers | bare engine p50 ms | service p50 ms (1 client) | server time p50 (p90) ms | server stages p50 ms "
          "| overhead (p50s) | overhead (paired, p50) |")
    print("|---|---|---|---|---|---|---|")
    for w, o in results["overhead"].items():
        print(f"| {w} | {o['bare_p50_ms']:.1f} | {o['service_p50_ms']:.1f} | **{o['server_p50_ms']:.1f}** "
              f"({o['server_p90_ms']:.1f}) | {json.dumps(o['server_stages_p50_ms'])} | {o['overhead_pct']:+.1f} % | "
              f"{o['paired_overhead_pct_p50']:+.1f} % |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
