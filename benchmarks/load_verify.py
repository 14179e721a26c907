"""Load benchmark of ``POST /v1/verify`` on a real ``facegate serve`` over loopback.

For each worker count it starts a server (temporary data directory, keys from the CLI), enrols
one LFW subject, then sends ``--requests`` verifications (genuine probe) at each concurrency
level with an async httpx client and reports throughput and p50/p95/p99 latency. Before any
server runs it times the bare engine on the same probe in this process (decode, detect, align,
embed + cosine against the enrolled template): the service's overhead is its single-client
median latency over that median.

    python benchmarks/load_verify.py --workers 1,2 --concurrency 1,2,4,8 --requests 60

Or against a server you started (``--url`` and ``--key``, a kiosk key, plus an enrolled
``--subject``). Needs ../shared (LFW) for the photos.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
LFW = Path(os.environ.get("FACEGATE_SHARED", REPO.parent / "shared")) / "data" / "lfw-dev" / "images"
PERSON = "Colin_Powell"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def bare_engine(enrol: bytes, probe: bytes, n: int) -> dict:
    """Median time of the engine alone: probe -> face -> cosine with the enrolled embedding."""
    from facegate.config import Settings
    from facegate.engine import FaceEngine

    engine = FaceEngine.load(Settings.load())
    ref = engine.face(enrol, policy="single").embedding
    for _ in range(3):
        engine.face(probe, policy="single")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        face = engine.face(probe, policy="single")
        engine.decide(engine.similarity(face.embedding, ref))
        times.append(time.perf_counter() - t0)
    return {"n": n, "p50_ms": 1000 * statistics.median(times), "mean_ms": 1000 * statistics.fmean(times)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def facegate(env, *args) -> str:
    return subprocess.run([sys.executable, "-m", "facegate", *args], env=env, cwd=REPO, check=True,
                          capture_output=True, text=True).stdout


class SpawnedServer:
    def __init__(self, workers: int, concurrency: int, queue: int):
        self.tmp = tempfile.TemporaryDirectory(prefix="facegate-bench-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FACEGATE_DATA_DIR": self.tmp.name, "FACEGATE_RATE_LIMIT_PER_MINUTE": "1000000",
                    "FACEGATE_INFERENCE_CONCURRENCY": str(concurrency), "FACEGATE_INFERENCE_QUEUE": str(queue)}
        self.env.pop("FACEGATE_DATABASE_URL", None)
        self.admin = json.loads(facegate(self.env, "keys", "create", "--role", "admin", "--json"))["key"]
        self.kiosk = json.loads(facegate(self.env, "keys", "create", "--role", "kiosk", "--json"))["key"]
        self.proc = subprocess.Popen([sys.executable, "-m", "facegate", "serve", "--port", str(self.port),
                                      "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
                                     env=self.env, cwd=REPO)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not become ready")

    def enrol(self, subject: str, photo: bytes) -> None:
        h = {"X-API-Key": self.admin}
        httpx.post(self.url + "/v1/subjects", json={"subject_id": subject}, headers=h).raise_for_status()
        httpx.post(self.url + f"/v1/subjects/{subject}/faces", files={"image": ("e.jpg", photo, "image/jpeg")},
                   headers=h, timeout=60).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
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
    ap.add_argument("--bare", type=int, default=40, help="bare engine calls for the baseline")
    ap.add_argument("--inference-concurrency", type=int, default=2)
    ap.add_argument("--inference-queue", type=int, default=64)
    ap.add_argument("--url", help="benchmark this running server instead of starting servers")
    ap.add_argument("--key", help="kiosk key for --url")
    ap.add_argument("--subject", help="enrolled subject for --url")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    enrol = (LFW / PERSON / f"{PERSON}_0001.jpg").read_bytes()
    probe = (LFW / PERSON / f"{PERSON}_0002.jpg").read_bytes()
    levels = [int(c) for c in args.concurrency.split(",")]
    results = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
               "cpus": os.cpu_count(), "bare_engine": bare_engine(enrol, probe, args.bare), "runs": []}
    print(f"bare engine: p50 {results['bare_engine']['p50_ms']:.1f} ms over {args.bare} calls", flush=True)

    if args.url:
        for c in levels:
            r = asyncio.run(load(args.url, args.key, args.subject, probe, c, args.requests, args.max_seconds))
            results["runs"].append({"workers": None, **r})
            print(json.dumps(results["runs"][-1]), flush=True)
    else:
        for w in [int(x) for x in args.workers.split(",")]:
            server = SpawnedServer(w, args.inference_concurrency, args.inference_queue)
            try:
                server.enrol("P-BENCH", enrol)
                for c in levels:
                    r = asyncio.run(load(server.url, server.kiosk, "P-BENCH", probe, c, args.requests, args.max_seconds))
                    results["runs"].append({"workers": w, **r})
                    print(json.dumps(results["runs"][-1]), flush=True)
            finally:
                server.stop()
    results["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    one = [r for r in results["runs"] if r["concurrency"] == 1]
    if one:
        base = results["bare_engine"]["p50_ms"]
        results["overhead_pct"] = {str(r["workers"]): round(100 * (r["p50_ms"] - base) / base, 1) for r in one}

    print()
    print(f"bare engine p50 {results['bare_engine']['p50_ms']:.1f} ms; {results['uptime_before']}")
    print("| workers | clients | ok/sent | req/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['workers']} | {r['concurrency']} | {r['ok']}/{r['requests']} | {r['throughput_rps']:.1f} | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |")
    if "overhead_pct" in results:
        print(f"service overhead over the bare engine at 1 client (p50): {results['overhead_pct']} %")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
