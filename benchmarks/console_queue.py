"""The console's review queue with many pending cases: server time of the first page.

``python -m benchmarks.console_queue [--cases 10000] [--runs 200] [--database-url URL]``

Fills a fresh store with ``--cases`` subjects, each with a pending certification review case
(reasons, scores, signals as the ledger writes them), then measures:

- ``desk``: :meth:`ReviewDesk.queue` (the first page, 50 cases, oldest first) in-process;
- ``http``: ``GET /console/api/queue`` on a real ``facegate serve`` with a signed-in reviewer's
  session (cookie; TOTP enrolled), timed by the client on loopback, which bounds the server's
  time from above (session lookup, the query, JSON).

Results go to ``benchmarks/results/console.md`` (appended) and stdout.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import sqlalchemy as sa

from benchmarks._common import ServerProcess, pct, uptime

RESULTS = Path(__file__).resolve().parent / "results" / "console.md"


def fill(settings, n: int) -> None:
    from facegate.clock import utcnow
    from facegate.storage.db import write_transaction
    from facegate.storage.schema import review_cases, subjects
    from facegate.storage.store import Store
    store = Store.open(settings)
    now = utcnow() - timedelta(days=1)
    with write_transaction(store.db) as conn:
        conn.execute(subjects.insert(), [dict(subject_id=f"P-{i:06d}", name=None, status="active", metadata=None,
                                              consent=None, created_at=now, updated_at=now) for i in range(n)])
        pks = dict(conn.execute(sa.select(subjects.c.subject_id, subjects.c.pk)).all())
        rows = [dict(workflow="certification", status="pending", subject_pk=pks[f"P-{i:06d}"], subject_id=f"P-{i:06d}",
                     certification_id=i + 1, period="2026", outcome="manual_review",
                     reasons=json.dumps(["shared_face"] if i % 3 == 0 else ["score_near_threshold"]),
                     scores=json.dumps({"score": 0.45, "threshold": 0.4875, "fmr": 1e-4, "quality": 0.8,
                                        "liveness": {"passed": True, "score": 0.93, "checks": []}}),
                     signals=json.dumps(["shared_face"] if i % 3 == 0 else []),
                     created_at=now + timedelta(seconds=i)) for i in range(n)]
        for i in range(0, n, 2000):
            conn.execute(review_cases.insert(), rows[i:i + 2000])
    store.close()


def session_cookie(settings) -> str:
    from facegate.storage.aad import totp_aad
    from facegate.storage.store import Store
    from facegate.workflows.review.operators import Operators
    store = Store.open(settings)
    ops = Operators(settings, store)
    ops.add("bench", "reviewer", "benchmark password")
    secret, session = ops.sign_in("bench", "benchmark password")
    ops.enrolment(session)
    with store.db.connect() as conn:
        blob, kid = conn.execute(sa.text("SELECT secret_enc, key_id FROM operator_totp")).one()
    ops.verify_code(session, pyotp.TOTP(store.keys.decrypt(blob, kid, totp_aad("bench")).decode()).now())
    store.close()
    return secret


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args(argv)
    from facegate.config import Settings
    from facegate.storage.store import Store
    from facegate.workflows.certification.ledger import CertificationLedger
    from facegate.workflows.review.desk import ReviewDesk

    data = Path(tempfile.mkdtemp(prefix="fg-console-bench-"))
    settings = Settings.load(data_dir=str(data), database_url=args.database_url)
    t0 = time.perf_counter()
    fill(settings, args.cases)
    fill_s = time.perf_counter() - t0
    store = Store.open(settings)
    desk = ReviewDesk(settings, store, CertificationLedger(settings, store))
    desk.queue(limit=50)
    desk_ms = []
    for _ in range(args.runs):
        t = time.perf_counter()
        page = desk.queue(limit=50)
        desk_ms.append((time.perf_counter() - t) * 1000)
    assert len(page["cases"]) == 50 and page["cases"][0]["subject_id"] == "P-000000"
    store.close()

    cookie = session_cookie(settings)
    env = {"FACEGATE_DATABASE_URL": args.database_url} if args.database_url else {}
    srv = ServerProcess(data, env=env, console_secure_cookie="0")
    if args.database_url:
        srv.env["FACEGATE_DATABASE_URL"] = args.database_url
    srv.start()
    http_ms = []
    try:
        with httpx.Client(base_url=srv.url, cookies={"fg_console": cookie}, timeout=30) as client:
            for _ in range(5):
                r = client.get("/console/api/queue", params={"limit": 50})
                assert r.status_code == 200, r.text
            for _ in range(args.runs):
                t = time.perf_counter()
                r = client.get("/console/api/queue", params={"limit": 50})
                http_ms.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200 and len(r.json()["cases"]) == 50
    finally:
        srv.stop()
    backend = "postgresql" if args.database_url else "sqlite"
    out = {"cases": args.cases, "runs": args.runs, "backend": backend, "fill_s": round(fill_s, 1),
           "desk_p50_ms": round(statistics.median(desk_ms), 2), "desk_p95_ms": round(pct(desk_ms, 95), 2),
           "http_p50_ms": round(statistics.median(http_ms), 2), "http_p95_ms": round(pct(http_ms, 95), 2),
           "load": uptime()}
    print(json.dumps(out))
    RESULTS.parent.mkdir(exist_ok=True)
    new = not RESULTS.exists()
    with RESULTS.open("a") as fh:
        if new:
            fh.write("# Operator console: the review queue\n\n`python -m benchmarks.console_queue` (see its docstring).\n\n"
                     "| backend | pending cases | first page (50), in-process p50 / p95 | over HTTP p50 / p95 (client-timed, loopback) | load |\n"
                     "|---|---|---|---|---|\n")
        fh.write(f"| {backend} | {args.cases:,} | {out['desk_p50_ms']} / {out['desk_p95_ms']} ms | "
                 f"{out['http_p50_ms']} / {out['http_p95_ms']} ms | {out['load']} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
