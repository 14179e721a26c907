"""What SQLite's ``synchronous=FULL`` costs per write transaction, against ``NORMAL``.

In WAL mode ``NORMAL`` syncs the log only at checkpoints: a commit the API has acknowledged can
be lost on power loss (not on a crash of the process). ``FULL`` (the setting since the security
review, :func:`facegate.storage.db._sqlite_events`) syncs the log at every commit. This measures
the three write transactions the service makes, through the real store on a fresh data
directory, alternating the two modes round by round:

- ``subject``: ``Store.add_subject`` (the subject row and its audit row);
- ``template``: ``Store.add_template`` (an encrypted 512-d template, its change-log and audit
  rows): the write of an enrolment;
- ``audit``: ``audit.record`` (one audit row): the write of every verify / identify decision.

    python -m benchmarks.sqlite_sync --n 300 --rounds 3 [--dir DIR]

``--dir`` picks the file system (default: a temporary folder; the figure depends on the disk
and its cache, so measure on the deployment's). Results: benchmarks/results/security.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from benchmarks._common import ms, uptime
from facegate.config import Settings
from facegate.storage import audit
from facegate.storage.store import Store

MODES = ("NORMAL", "FULL")


def measure(mode: str, n: int, folder: Path, seed: int) -> dict:
    store = Store.open(Settings.load(data_dir=str(folder)))

    @sa.event.listens_for(store.db, "connect")
    def _force(dbapi_conn, _record):          # runs after facegate's own PRAGMAs
        dbapi_conn.execute(f"PRAGMA synchronous={mode}")

    store.db.dispose()                         # connections made before the listener are dropped
    with store.db.connect() as conn:
        actual = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {"subject": [], "template": [], "audit": []}
    for i in range(n):
        t0 = time.perf_counter()
        store.add_subject(f"B-{i:06d}", name="bench", actor="bench")
        t1 = time.perf_counter()
        store.add_template(f"B-{i:06d}", rng.standard_normal(512).astype("float32"), pack_id="bench",
                           quality=0.9, actor="bench")
        t2 = time.perf_counter()
        audit.record(store.db, actor="bench", key_id=None, operation="verify", outcome="match",
                     subject_id=f"B-{i:06d}", scores={"score": 0.7})
        t3 = time.perf_counter()
        times["subject"].append(t1 - t0)
        times["template"].append(t2 - t1)
        times["audit"].append(t3 - t2)
    store.close()
    return {"mode": mode, "pragma_synchronous": actual, **{k: ms(v) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="subjects (each: 3 write transactions) per round and mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", help="parent folder of the throwaway data directories")
    args = ap.parse_args()
    load_before = uptime()
    runs = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="facegate-sync-") as tmp:
        for r in range(args.rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                folder = Path(tmp) / f"{mode}-{r}"
                runs.append({"round": r, **measure(mode, args.n, folder, seed=r)})
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for mode in MODES:
        rows = [x for x in runs if x["mode"] == mode]
        summary[mode] = {k: round(float(np.median([x[k]["median"] for x in rows])), 3)
                         for k in ("subject", "template", "audit")}
    print(json.dumps({"median_of_round_medians_ms": summary, "n": args.n, "rounds": args.rounds,
                      "load_before": load_before, "load_after": uptime()}, indent=1))


if __name__ == "__main__":
    main()
