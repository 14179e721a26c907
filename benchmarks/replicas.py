"""Replicas: several ``facegate serve`` processes on one PostgreSQL behind nginx (round robin).

What it measures, on this machine (results: benchmarks/results/replicas.md):

1. ``ratelimit``: the cost of one rate-limit take (the one-statement token bucket of
   ``facegate.storage.ratelimits``) on SQLite and on PostgreSQL, against the old in-memory
   bucket; and the cost of an API-key lookup without a cache (SQLite: every request reads the
   key table) against a cache hit.
2. ``propagation``: enrol through replica A, then how long until replica B's index holds the
   template (B's ``/readyz`` ``index.applied_seq`` polled every ~2 ms) and whether an identify
   on B sent 200 ms after A answered finds the subject; a distribution over ``--enrolments``.
3. ``load``: ``POST /v1/verify`` throughput and p50/p99 through nginx with 1 and with 2
   replicas behind it (each replica one uvicorn worker), at ``--concurrency`` clients.

    python -m benchmarks.replicas                          # all three
    python -m benchmarks.replicas --only ratelimit,propagation --enrolments 50

It starts its own PostgreSQL cluster (``scripts/start-postgres.sh`` on a free port, in a
temporary folder, stopped and removed at the end) and its own nginx (Debian's package; the
configuration is ``deploy/nginx.conf`` with the addresses replaced). Needs ../shared or
``$FACEGATE_SHARED`` (LFW) for the photos.

The classes here (:class:`PostgresCluster`, :class:`Nginx`, :class:`Replica`) are also the
replica tests' harness (``tests/replicas/test_replicas.py``), so both start the topology the same way.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._common import REPO, ServerProcess, create_key, free_port, pct, shared_dir, uptime

DEPLOY_NGINX = REPO / "deploy" / "nginx.conf"
LFW = shared_dir() / "data" / "lfw-dev" / "images"


# ------------------------------------------------------------------ PostgreSQL
def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    return dirs[-1] if dirs and (dirs[-1] / "initdb").exists() else None


class PostgresCluster:
    """A PostgreSQL cluster of our own, started by ``scripts/start-postgres.sh`` on a free port
    in a new temporary folder, so it can be stopped and started again (``stop()``/``start()``)
    without disturbing anyone else's server. ``url`` is its ``facegate_test`` database (new,
    hence empty); ``destroy()`` stops it and removes the folder."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        # /tmp itself, not a pytest folder: the postgres user must reach it when we run as root
        self.dir = Path(tempfile.mkdtemp(prefix="facegate-pg-replicas-"))
        self.url = ""

    @staticmethod
    def available() -> bool:
        return _pg_bin() is not None

    def _env(self) -> dict:
        return {**os.environ, "FACEGATE_PG_PORT": str(self.port), "FACEGATE_PG_DIR": str(self.dir)}

    def start(self) -> "PostgresCluster":
        proc = subprocess.run(["bash", str(REPO / "scripts" / "start-postgres.sh")], env=self._env(),
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"start-postgres.sh failed: {proc.stderr}")
        self.url = proc.stdout.strip().splitlines()[-1]
        return self

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(_pg_bin() / "pg_ctl"), "-D", str(self.dir / "data"), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: clients are disconnected at once."""
        self._pg_ctl("stop", "-m", "fast", "-w")

    def destroy(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ nginx
def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def nginx_config(upstreams: list[str], listen: str, prefix: Path) -> str:
    """``deploy/nginx.conf`` with the replicas' and nginx's own addresses and the file paths
    replaced (and ``user root;`` when we are root, so the workers can use ``prefix``): the
    configuration the tests run is the one deployed."""
    text = DEPLOY_NGINX.read_text()
    servers = re.findall(r"^\s*server facegate-\d+:8000\b.*$", text, re.M)
    if not servers:
        raise ValueError("deploy/nginx.conf: no 'server facegate-N:8000 ...' upstream lines")
    options = re.sub(r"^\s*server facegate-\d+:8000", "", servers[0])
    block = "\n".join(f"        server {u}{options}" for u in upstreams)
    text = text.replace("\n".join(servers), block, 1)
    text = re.sub(r"^\s*listen 8080;", f"        listen {listen};", text, flags=re.M)
    text = re.sub(r"^pid .*;$", f"pid {prefix}/nginx.pid;", text, flags=re.M)
    text = re.sub(r"^error_log .*;$", f"error_log {prefix}/error.log warn;", text, flags=re.M)
    text = re.sub(r"^(\s*)access_log \S+ (\w+);$", rf"\1access_log {prefix}/access.log \2;", text, flags=re.M)
    temp = "".join(f"    {kind}_temp_path {prefix}/tmp/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("\nhttp {\n", "\nhttp {\n" + temp, 1)
    if os.geteuid() == 0:
        text = "user root;\n" + text
    return text


class Nginx:
    """nginx in the foreground on a free loopback port, configured by :func:`nginx_config`."""

    def __init__(self, upstreams: list[str]):
        self.prefix = Path(tempfile.mkdtemp(prefix="facegate-nginx-"))
        (self.prefix / "tmp").mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(nginx_config(upstreams, f"127.0.0.1:{self.port}", self.prefix))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "Nginx":
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        test = subprocess.run([binary, "-t", "-p", str(self.prefix), "-c", str(self.conf), "-e",
                               str(self.prefix / "error.log")], capture_output=True, text=True)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {test.stderr}")
        self.proc = subprocess.Popen([binary, "-p", str(self.prefix), "-c", str(self.conf), "-e",
                                      str(self.prefix / "error.log"), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not listen within {timeout}s: {self.log()}")

    def log(self, name: str = "error.log") -> str:
        try:
            return (self.prefix / name).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)        # graceful: finish what is in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


# ------------------------------------------------------------------ replicas
def write_data_key(path: Path) -> Path:
    """A data-key file (one base64 key), shared by every replica through FACEGATE_DATA_KEY_FILE."""
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    path.chmod(0o600)
    return path


class Replica(ServerProcess):
    """One ``facegate serve`` on ``database_url`` with the shared ``data_key_file``; its own
    ``data_dir`` holds only its index snapshot and log. (``ServerProcess`` drops
    FACEGATE_DATABASE_URL from its environment; the replica sets it back.)"""

    def __init__(self, data_dir: Path, database_url: str, data_key_file: Path, **settings):
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(data_dir, data_key_file=str(data_key_file), **settings)
        self.env["FACEGATE_DATABASE_URL"] = database_url
        self.address = f"127.0.0.1:{self.port}"

    def restart(self, timeout: float = 120) -> "Replica":
        self.start(timeout=timeout)
        return self

    def ready(self) -> dict:
        return httpx.get(self.url + "/readyz", timeout=5).json()


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` (MiB), from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def lfw_people(n: int, offset: int = 0) -> list[tuple[str, bytes]]:
    """``n`` different LFW people (subject id, first photo), skipping the first ``offset``."""
    names = sorted(p.name for p in LFW.iterdir() if p.is_dir())[offset:offset + n]
    return [("P-" + name.upper().replace("_", "-")[:60], (LFW / name / f"{name}_0001.jpg").read_bytes())
            for name in names]


def enrol(client: httpx.Client, url: str, key: str, sid: str, photo: bytes) -> httpx.Response:
    """Create ``sid`` and enrol ``photo``: the face's response (or the subject's, if that failed)."""
    h = {"X-API-Key": key}
    r = client.post(url + "/v1/subjects", json={"subject_id": sid}, headers=h)
    if r.status_code != 201:
        return r
    return client.post(url + f"/v1/subjects/{sid}/faces", files={"image": ("e.jpg", photo, "image/jpeg")},
                       headers=h, timeout=60)


def identify_top(client: httpx.Client, url: str, key: str, photo: bytes) -> str | None:
    r = client.post(url + "/v1/identify", files={"image": ("p.jpg", photo, "image/jpeg")},
                    headers={"X-API-Key": key}, timeout=60)
    r.raise_for_status()
    candidates = r.json()["candidates"]
    return candidates[0]["subject_id"] if candidates else None


def last_seq(database_url: str) -> int:
    import sqlalchemy as sa
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM change_log")).scalar())
    finally:
        engine.dispose()


def propagation(a: Replica, b: Replica, database_url: str, admin: str, kiosk: str,
                people: list[tuple[str, bytes]], after_s: float = 0.2, limit: int | None = None) -> dict:
    """Enrol each person on ``a`` (until ``limit`` are enrolled); from ``a``'s answer, poll
    ``b``'s ``/readyz`` until its index has applied the enrolment (the delay), then identify on
    ``b`` ``after_s`` after the answer. Returns the delays (s), the enrolled subject ids, how
    many identifies found their subject, and the refused enrolments."""
    import sqlalchemy as sa
    engine = sa.create_engine(database_url)
    delays, found, refused, enrolled = [], 0, [], []
    try:
        with httpx.Client(timeout=30) as client:
            for sid, photo in people:
                if limit is not None and len(enrolled) >= limit:
                    break
                r = enrol(client, a.url, admin, sid, photo)
                t0 = time.perf_counter()
                if r.status_code != 201:
                    refused.append((sid, r.status_code, r.json().get("code")))
                    continue
                enrolled.append(sid)
                with engine.connect() as conn:
                    target = int(conn.execute(sa.text("SELECT MAX(seq) FROM change_log")).scalar())
                while True:
                    seen = client.get(b.url + "/readyz").json().get("index", {}).get("applied_seq") or 0
                    if seen >= target:
                        delays.append(time.perf_counter() - t0)
                        break
                    if time.perf_counter() - t0 > 10:
                        delays.append(float("inf"))
                        break
                    time.sleep(0.002)
                wait = t0 + after_s - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                found += identify_top(client, b.url, kiosk, photo) == sid
    finally:
        engine.dispose()
    return {"delays_s": delays, "enrolled": enrolled, "identified_after_s": after_s, "found": found,
            "refused": refused}


def summary_ms(values_s: list[float]) -> dict:
    v = [1000 * x for x in values_s]
    return {"n": len(v), "p50": round(pct(v, 50), 1), "p90": round(pct(v, 90), 1), "p95": round(pct(v, 95), 1),
            "p99": round(pct(v, 99), 1), "max": round(max(v), 1) if v else None}


# ------------------------------------------------------------------ the benchmarks
def bench_ratelimit(pg_url: str, n: int) -> dict:
    """Per-call cost of a rate-limit take and of a key lookup, in this process."""
    from facegate.service.auth import KeyCache
    from facegate.storage import apikeys, ratelimits
    from facegate.storage.db import open_database

    def timed(fn, count):
        out = []
        for _ in range(count):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return {"median_us": round(1e6 * statistics.median(out), 1), "p99_us": round(1e6 * pct(out, 99), 1),
                "n": count}

    results = {}
    tmp = tempfile.mkdtemp(prefix="facegate-bench-rl-")
    try:
        for name, url in (("sqlite", f"sqlite:///{tmp}/facegate.db"), ("postgresql", pg_url)):
            db = open_database(url)
            ratelimits.take(db, "warm", 10 ** 9)
            results[f"take_{name}"] = timed(lambda: ratelimits.take(db, "bench", 10 ** 9), n)
            secret, _ = apikeys.create_key(db, "app")
            results[f"key_lookup_{name}"] = timed(lambda: apikeys.authenticate(db, secret), n)
            db.dispose()
        cache = KeyCache(60, enabled=True)
        cache.put(secret, apikeys.ApiKey("k_x", "app"))
        results["key_cache_hit"] = timed(lambda: cache.get(secret), n)
        # the per-process bucket it replaces (facegate/service/auth.py before the replicas issue)
        import threading
        buckets: dict = {}
        lock = threading.Lock()

        def old_take(key_id="k", per_minute=10 ** 9):
            rate = per_minute / 60.0
            now = time.monotonic()
            with lock:
                tokens, last = buckets.get(key_id, (float(per_minute), now))
                tokens = min(float(per_minute), tokens + (now - last) * rate)
                if tokens < 1.0:
                    buckets[key_id] = (tokens, now)
                    raise RuntimeError("rate_limited")
                buckets[key_id] = (tokens - 1.0, now)
        results["take_in_memory_before"] = timed(old_take, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def stage_means(url: str) -> dict:
    """Sums and counts of ``facegate_stage_seconds`` by stage, from a server's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict = {}
    for m in re.finditer(r'^facegate_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$', text, re.M):
        out.setdefault(m[2], {})[m[1]] = float(m[3])
    return out


def bench_in_service(url: str, key: str, n: int) -> dict:
    """``n`` cheap authorised requests (GET /v1/subjects?limit=1, one key) on a running server:
    the client's median, and inside the server the mean of the ``auth`` stage (key lookups on a
    cache miss; how many there were) and of the ``ratelimit`` stage (every request)."""
    before = stage_means(url)
    times = []
    with httpx.Client(timeout=30, headers={"X-API-Key": key}) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            client.get(url + "/v1/subjects", params={"limit": 1}).raise_for_status()
            times.append(time.perf_counter() - t0)
    after = stage_means(url)
    out = {"requests": n, "client_p50_ms": round(1000 * statistics.median(times), 2)}
    for stage in ("auth", "ratelimit"):
        a, b = before.get(stage, {}), after.get(stage, {})
        count = b.get("count", 0) - a.get("count", 0)
        out[stage] = {"count": int(count), "mean_us": round(1e6 * (b.get("sum", 0) - a.get("sum", 0)) / count, 1)
                      if count else None}
    return out


async def _load(url: str, key: str, subject: str, probe: bytes, concurrency: int, requests: int) -> dict:
    from benchmarks.load_verify import load
    return await load(url, key, subject, probe, concurrency, requests, max_seconds=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="ratelimit,propagation,load", help="comma list of ratelimit, propagation, load")
    ap.add_argument("--calls", type=int, default=2000, help="ratelimit: calls per measurement")
    ap.add_argument("--enrolments", type=int, default=50, help="propagation: enrolments")
    ap.add_argument("--concurrency", default="1,4,8", help="load: concurrent clients")
    ap.add_argument("--requests", type=int, default=80, help="load: verifications per concurrency level")
    ap.add_argument("--rounds", type=int, default=2, help="load: rounds, alternating 1 and 2 replicas")
    ap.add_argument("--index-sync-s", type=float, default=2.0, help="the replicas' polling interval (the fallback)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    only = set(args.only.split(","))
    results: dict = {"uptime_before": uptime(), "cpus": os.cpu_count(), "args": vars(args)}

    pg = PostgresCluster().start()
    work = Path(tempfile.mkdtemp(prefix="facegate-bench-replicas-"))
    replicas: list[Replica] = []
    proxies: list[Nginx] = []
    try:
        if "ratelimit" in only:
            results["ratelimit"] = bench_ratelimit(pg.url, args.calls)
            print(json.dumps({"ratelimit": results["ratelimit"]}), flush=True)
            # the same, inside a server: SQLite (no key cache) ...
            sq = ServerProcess(work / "sqlite", serve_args=("--no-access-log",), rate_limit_per_minute=10 ** 6,
                               intra_op_threads=1)
            (work / "sqlite").mkdir()
            key = create_key(sq.env, "operator")["key"]
            try:
                sq.start(timeout=180)
                results["in_service_sqlite"] = bench_in_service(sq.url, key, args.calls // 4)
            finally:
                sq.stop()
            print(json.dumps({"in_service_sqlite": results["in_service_sqlite"]}), flush=True)
        if only & {"propagation", "load"} or "ratelimit" in only:
            key_file = write_data_key(work / "data.key")
            common = dict(rate_limit_per_minute=10 ** 6, index_sync_s=args.index_sync_s, inference_queue=64,
                          intra_op_threads=1)
            a = Replica(work / "a", pg.url, key_file, **common)
            admin = create_key(a.env, "admin")["key"]
            kiosk = create_key(a.env, "kiosk")["key"]
            b = Replica(work / "b", pg.url, key_file, **common)
            for r in (a, b):
                replicas.append(r.start(timeout=180))
            results["replica_rss_mb_at_start"] = [rss_mb(r.proc.pid) for r in (a, b)]
            if "ratelimit" in only:          # ... and PostgreSQL (keys cached while the change feed is up)
                operator = create_key(a.env, "operator")["key"]
                results["in_service_postgresql"] = bench_in_service(a.url, operator, args.calls // 4)
                print(json.dumps({"in_service_postgresql": results["in_service_postgresql"]}), flush=True)
            if "propagation" in only:
                people = lfw_people(2 * args.enrolments, offset=1000)   # some photos are refused (multiple_faces)
                p = propagation(a, b, pg.url, admin, kiosk, people, limit=args.enrolments)
                results["propagation"] = {"delay_ms": summary_ms(p["delays_s"]), "found": p["found"],
                                          "identified_after_ms": 1000 * p["identified_after_s"],
                                          "refused": p["refused"]}
                print(json.dumps({"propagation": results["propagation"]}), flush=True)
            if "load" in only:
                # the photos of benchmarks/load_verify.py (results/service.md), for comparison
                subject, person = "P-BENCH", "Colin_Powell"
                photo, probe = ((LFW / person / f"{person}_000{i}.jpg").read_bytes() for i in (1, 2))
                with httpx.Client(timeout=60) as client:
                    assert enrol(client, a.url, admin, subject, photo).status_code == 201
                results["load"] = []
                # one nginx over A alone, one over A and B; the rounds alternate between them so
                # that both see the same drift in what the machine's other users do
                for upstreams in ([a.address], [a.address, b.address]):
                    proxies.append(Nginx(upstreams).start())
                for rnd in range(args.rounds):
                    for c in [int(x) for x in args.concurrency.split(",")]:
                        for proxy, n in zip(proxies, (1, 2)):
                            r = asyncio.run(_load(proxy.url, kiosk, subject, probe, c, args.requests))
                            row = {"round": rnd + 1, "replicas": n, **r}
                            results["load"].append(row)
                            print(json.dumps(row), flush=True)
        if replicas:
            results["replica_rss_mb_at_end"] = [rss_mb(r.proc.pid) for r in replicas]
    finally:
        for proxy in proxies:
            proxy.stop()
        for r in replicas:
            r.stop()
        pg.destroy()
        shutil.rmtree(work, ignore_errors=True)
    results["uptime_after"] = uptime()

    print()
    print(f"before: {results['uptime_before']}\nafter:  {results['uptime_after']}")
    if "ratelimit" in results:
        print("| measure | median us | p99 us | n |\n|---|---|---|---|")
        for k, v in results["ratelimit"].items():
            print(f"| {k} | {v['median_us']} | {v['p99_us']} | {v['n']} |")
    for name in ("in_service_sqlite", "in_service_postgresql"):
        if name in results:
            v = results[name]
            print(f"{name}: {v['requests']} GET /v1/subjects, client p50 {v['client_p50_ms']} ms; auth stage "
                  f"{v['auth']['mean_us']} us x {v['auth']['count']}; ratelimit stage {v['ratelimit']['mean_us']} us "
                  f"x {v['ratelimit']['count']}")
    if "replica_rss_mb_at_start" in results:
        print(f"replica RSS MiB: {results['replica_rss_mb_at_start']} at start (empty gallery), "
              f"{results.get('replica_rss_mb_at_end')} at the end")
    if "propagation" in results:
        d = results["propagation"]["delay_ms"]
        print(f"\npropagation A -> B index (ms): p50 {d['p50']} p90 {d['p90']} p95 {d['p95']} p99 {d['p99']} "
              f"max {d['max']} (n {d['n']}); identify on B {results['propagation']['identified_after_ms']:.0f} ms "
              f"after A answered found {results['propagation']['found']} / {d['n']}")
    if "load" in results:
        print("\n| round | replicas | clients | ok/sent | req/s | p50 ms | p95 ms | p99 ms |\n"
              "|---|---|---|---|---|---|---|---|")
        for r in results["load"]:
            print(f"| {r['round']} | {r['replicas']} | {r['concurrency']} | {r['ok']}/{r['requests']} | "
                  f"{r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |")
        print("\nmedians over the rounds:\n| replicas | clients | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
        for c in sorted({r["concurrency"] for r in results["load"]}):
            for n in (1, 2):
                rows = [r for r in results["load"] if r["concurrency"] == c and r["replicas"] == n]
                print(f"| {n} | {c} | {statistics.median(r['throughput_rps'] for r in rows):.1f} | "
                      f"{statistics.median(r['p50_ms'] for r in rows):.1f} | "
                      f"{statistics.median(r['p99_ms'] for r in rows):.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
