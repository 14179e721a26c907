"""The filing count and the retention backlog on a large gallery: what the service's compliance
loop costs each time it runs.

``python -m benchmarks.compliance_scale [--subjects 1000000] [--runs 3] [--database-url URL]``

Fills a fresh store with ``--subjects`` people, each with a template, its SFace second opinion and
a reference photo (random bytes of the real sizes: the queries read keys, not ciphertexts), a
fifth of them with a certification capture, then times:

- ``count_stored``: :func:`facegate.storage.erasure.count_stored` (the filing count: individuals
  with any face information, a person counted once), which the service's compliance loop
  runs for the ``facegate_stored_individuals`` gauge;
- ``backlog``: :func:`facegate.storage.retention.backlog` (what each retention rule finds due);
- ``report``: :func:`facegate.workflows.compliance.report.build` (the whole report);
- ``purge_deceased``: :func:`facegate.storage.retention.run` after ``--deceased`` people were
  marked deceased 40 days ago (their face information is due): the whole run, every class.

Results go to ``benchmarks/results/compliance.md`` (appended) and stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from benchmarks._common import uptime

RESULTS = Path(__file__).resolve().parent / "results" / "compliance.md"
BATCH = 20_000


def fill(store, n: int) -> None:
    from facegate.clock import utcnow
    from facegate.storage.db import write_transaction
    from facegate.storage.schema import (certification_captures, certifications, reference_photos, subjects,
                                         template_family, templates)
    now = utcnow() - timedelta(days=1)
    kid = store.keys.current_id
    emb, photo = os.urandom(12 + 2048 + 16), os.urandom(12 + 9000 + 16)
    for start in range(0, n, BATCH):
        ids = range(start, min(n, start + BATCH))
        with write_transaction(store.db) as conn:
            conn.execute(subjects.insert(), [dict(subject_id=f"P-{i:08d}", status="active", created_at=now,
                                                  updated_at=now) for i in ids])
            pks = dict(conn.execute(sa.select(subjects.c.subject_id, subjects.c.pk).where(
                subjects.c.subject_id.between(f"P-{ids[0]:08d}", f"P-{ids[-1]:08d}"))).all())
            conn.execute(templates.insert(), [dict(subject_pk=pks[f"P-{i:08d}"], pack_id="bench", embedding_enc=emb,
                                                   key_id=kid, created_at=now) for i in ids])
            tids = conn.execute(sa.select(templates.c.id, templates.c.subject_pk).where(
                templates.c.subject_pk.in_(list(pks.values())))).all()
            conn.execute(template_family.insert(), [dict(template_id=t, subject_pk=p, pack_id="bench", model="sface",
                                                         embedding_enc=emb, key_id=kid, created_at=now)
                                                    for t, p in tids])
            conn.execute(reference_photos.insert(), [dict(template_id=t, subject_pk=p, photo_enc=photo, key_id=kid,
                                                          width=200, height=240, created_at=now) for t, p in tids])
            certs = [p for _, p in tids[::5]]
            conn.execute(certifications.insert(), [dict(subject_pk=p, period="2026", outcome="certified",
                                                        method="face", created_at=now) for p in certs])
            made = conn.execute(sa.select(certifications.c.id, certifications.c.subject_pk).where(
                certifications.c.subject_pk.in_(certs))).all()
            conn.execute(certification_captures.insert(), [dict(certification_id=c, subject_pk=p, period="2026",
                                                                pack_id="bench", embedding_enc=emb, key_id=kid,
                                                                created_at=now) for c, p in made])

def purge_deceased(store, n: int) -> dict:
    from facegate import clock
    from facegate.storage import retention
    from facegate.storage.db import write_transaction
    from facegate.storage.schema import subjects
    long_ago = clock.utcnow() - timedelta(days=40)
    with write_transaction(store.db) as conn:
        conn.execute(subjects.update().where(subjects.c.pk <= n).values(status="deceased", status_since=long_ago))
    out = retention.run(store)
    assert out["ran"], out
    return out["counts"]


def timed(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--deceased", type=int, default=1000)
    ap.add_argument("--database-url", default="", help="PostgreSQL URL (default: SQLite in a temp folder)")
    args = ap.parse_args(argv)

    from facegate.config import Settings
    from facegate.storage import erasure, retention
    from facegate.storage.store import Store
    from facegate.workflows.compliance import report

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(data_dir=tmp, database_url=args.database_url)
        store = Store.open(settings)
        t0 = time.perf_counter()
        fill(store, args.subjects)
        fill_s = time.perf_counter() - t0
        if store.backend == "postgresql":
            with store.db.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()

        def count():
            with store.db.connect() as conn:
                return erasure.count_stored(conn)

        def backlog():
            with store.db.connect() as conn:
                return retention.backlog(conn, settings)

        count_ms, stored = timed(count, args.runs)
        backlog_ms, _ = timed(backlog, args.runs)
        report_ms, built = timed(lambda: report.build(store), 1)
        purge_ms, purged = timed(lambda: purge_deceased(store, args.deceased), 1)
        store.close()
    assert stored == args.subjects, stored
    out = {"backend": store.backend, "subjects": args.subjects, "fill_s": round(fill_s, 1),
           "count_stored_ms": round(count_ms, 1), "backlog_ms": round(backlog_ms, 1),
           "report_ms": round(report_ms, 1), "deceased": args.deceased, "purge_deceased_ms": round(purge_ms, 1),
           "purged": purged, "stored": stored,
           "report_stored": built["filing"]["stored_individuals"], "load": uptime()}
    print(json.dumps(out))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(f"\n`python -m benchmarks.compliance_scale --subjects {args.subjects}"
                 f"{' --database-url ...' if args.database_url else ''}` ({time.strftime('%Y-%m-%d')}):\n\n"
                 f"```\n{json.dumps(out, indent=2)}\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
