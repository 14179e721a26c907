"""Retention (docs/compliance.md): each data class purged on time and not before, with a fixed
clock; idempotent; crash-safe under kill -9; one purge across two replicas on PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from facegate import clock
from facegate.storage import audit, erasure, retention
from facegate.storage.schema import (audit_log, certification_captures, certifications, liveness_frames,
                                     liveness_sessions, operator_sessions, operators, review_cases, review_evidence,
                                     subjects, template_family, templates)
from gallery_support import fresh_database, make_settings
from service_support import REPO, Server, cli

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
SEC = timedelta(seconds=1)


@pytest.fixture
def store(tmp_path):
    from facegate.storage.store import Store
    s = Store.open(make_settings(tmp_path, "", retention_withdrawn_days=2.0))
    yield s
    s.close()


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return v / np.linalg.norm(v)


def run_at(store, t: datetime) -> dict:
    with clock.fixed(t):
        out = retention.run(store)
    assert out["ran"], out
    return out["counts"]


def count(store, table, *where) -> int:
    with store.db.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()


def add_session(store, sid: str, status: str, expires: datetime, frames: int = 3, subject_id=None) -> None:
    with store.db.begin() as conn:
        conn.execute(liveness_sessions.insert().values(
            id=sid, challenge="[]", nonce="n", token_hash=sid.ljust(64, "0"), status=status, subject_id=subject_id,
            created_at=expires.timestamp() - 45, expires_at=expires.timestamp()))
        for i in range(frames):
            blob, kid = store.keys.encrypt(b"jpeg", f"facegate:frame:v1:{sid}:{i}".encode())
            conn.execute(liveness_frames.insert().values(session_id=sid, seq=i, t=i / 20, data_enc=blob, key_id=kid))


def test_liveness_frames_and_sessions(store):
    add_session(store, "pending-session", "pending", T0)
    add_session(store, "judged-session", "passed", T0 + timedelta(days=30))   # judged: its frames go at once
    c = run_at(store, T0 - SEC)
    assert c["liveness_frames"] == 3 and count(store, liveness_frames) == 3
    assert count(store, liveness_frames, liveness_frames.c.session_id == "pending-session") == 3
    c = run_at(store, T0 + SEC)
    assert c["liveness_frames"] == 3 and count(store, liveness_frames) == 0
    # the session rows: a day after expiry (FACEGATE_RETENTION_LIVENESS_SESSIONS_DAYS=1)
    assert run_at(store, T0 + timedelta(days=1) - SEC)["liveness_sessions"] == 0
    assert count(store, liveness_sessions) == 2
    assert run_at(store, T0 + timedelta(days=1) + SEC)["liveness_sessions"] == 1
    assert [r for r in store.db.connect().execute(sa.select(liveness_sessions.c.id)).scalars()] == ["judged-session"]
    assert run_at(store, T0 + timedelta(days=1) + SEC) == {k: 0 for k in c}        # idempotent


def test_deceased_and_withdrawn_face_data(store):
    with clock.fixed(T0):
        for sid in ("D-1", "W-1", "L-1"):
            store.add_subject(sid)
            store.add_template(sid, vec(hash(sid) % 100), "pack", family={"sface": vec(7)})
        store.set_status("D-1", "deceased")
        with store.db.begin() as conn:     # W-1 withdrew at T0; a template written around it is left over
            conn.execute(subjects.update().where(subjects.c.subject_id == "W-1").values(withdrawn_at=T0))
    pk = {r.subject_id: r.pk for r in store.db.connect().execute(sa.select(subjects.c.subject_id, subjects.c.pk))}
    c = run_at(store, T0 + timedelta(days=2) - SEC)
    assert c["deceased_face_data"] == 0 and c["withdrawn_face_data"] == 0 and count(store, templates) == 3
    c = run_at(store, T0 + timedelta(days=2) + SEC)                          # withdrawn: 2 days in this store
    assert c["withdrawn_face_data"] == 2 and c["deceased_face_data"] == 0
    assert count(store, templates, templates.c.subject_pk == pk["W-1"]) == 0
    assert run_at(store, T0 + timedelta(days=30) - SEC)["deceased_face_data"] == 0   # deceased: 30 days
    assert count(store, templates, templates.c.subject_pk == pk["D-1"]) == 1
    c = run_at(store, T0 + timedelta(days=30) + SEC)
    assert c["deceased_face_data"] == 2                                       # template + its SFace opinion
    assert count(store, templates, templates.c.subject_pk == pk["D-1"]) == 0
    assert count(store, template_family, template_family.c.subject_pk == pk["D-1"]) == 0
    assert count(store, templates, templates.c.subject_pk == pk["L-1"]) == 1          # the living keep theirs
    assert store.get_subject("D-1")["status"] == "deceased"                          # the row (pension records) stays
    with store.db.connect() as conn:
        erased = [r for r in audit.rows(conn, operation="retention.erase")]
    assert {e["subject_id"] for e in erased} == {"W-1", "D-1"} and store.audit_verify()["ok"]


def test_the_console_s_decision_evidence_and_ended_sessions(store):
    """A decided case's evidence 30 days after the decision (the case row stays, a pending
    case's evidence stays); a console session 30 days after it ended or expired."""
    store.add_subject("R-1")
    with store.db.begin() as conn:
        spk = conn.execute(sa.select(subjects.c.pk)).scalar()
        for status, decided in (("decided", T0), ("pending", None)):
            case = conn.execute(review_cases.insert().values(
                workflow="certification", status=status, subject_pk=spk, subject_id="R-1", outcome="manual_review",
                created_at=T0 - timedelta(days=1), decided_at=decided)).inserted_primary_key[0]
            for seq in range(2):
                blob, kid = store.keys.encrypt(b"jpeg", f"e:{case}:{seq}".encode())
                conn.execute(review_evidence.insert().values(case_id=case, kind="frame", seq=seq, data_enc=blob,
                                                             key_id=kid, created_at=T0))
        conn.execute(operators.insert().values(name="ana", role="reviewer", created_at=T0))
        conn.execute(operator_sessions.insert(), [
            dict(id_hash="a" * 64, operator="ana", stage="active", csrf="c", created_at=T0, last_seen=T0,
                 expires_at=T0 + timedelta(hours=8), ended_at=T0 + timedelta(hours=1)),
            dict(id_hash="b" * 64, operator="ana", stage="active", csrf="c", created_at=T0, last_seen=T0,
                 expires_at=T0 + timedelta(hours=8), ended_at=None)])
    c = run_at(store, T0 + timedelta(days=30) - SEC)
    assert c["decision_evidence"] == 0 and c["operator_sessions"] == 0
    c = run_at(store, T0 + timedelta(days=30, hours=1) + SEC)
    assert c["decision_evidence"] == 2 and c["operator_sessions"] == 1
    assert count(store, review_evidence) == 2 and count(store, review_cases) == 2    # the pending case's, the rows
    assert run_at(store, T0 + timedelta(days=30, hours=8) + SEC)["operator_sessions"] == 1   # expired, never ended
    assert count(store, operator_sessions) == 0


def test_the_filing_count_is_counted_once_per_interval(store):
    """The service's gauge reads the count another replica made within the interval (it scans
    every face-data table) and counts again after it."""
    for sid in ("F-1", "F-2"):
        store.add_subject(sid)
    store.add_template("F-1", vec(1), "pack")
    assert erasure.recent_count(store.db, 600) == 1
    store.add_template("F-2", vec(2), "pack")
    assert erasure.recent_count(store.db, 600) == 1
    assert erasure.recent_count(store.db, 0) == 2
    with store.db.connect() as conn:
        assert erasure.count_stored(conn) == 2


def test_certification_captures_two_periods(store):
    store.add_subject("C-1")
    with store.db.begin() as conn:
        spk = conn.execute(sa.select(subjects.c.pk)).scalar()
        for i, created in enumerate([datetime(2024, 6, 1, tzinfo=timezone.utc), datetime(2025, 6, 1, tzinfo=timezone.utc)]):
            cid = conn.execute(certifications.insert().values(subject_pk=spk, period=str(created.year),
                                                              outcome="certified", method="face", created_at=created)
                               ).inserted_primary_key[0]
            blob, kid = store.keys.encrypt(vec(i).tobytes(), b"x")
            conn.execute(certification_captures.insert().values(certification_id=cid, subject_pk=spk,
                                                                 period=str(created.year), pack_id="p",
                                                                 embedding_enc=blob, key_id=kid, created_at=created))
    end_2025 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert run_at(store, end_2025 - SEC)["certification_captures"] == 0         # 2025 and 2024 kept
    assert run_at(store, end_2025 + SEC)["certification_captures"] == 1         # 2026 and 2025 kept
    assert count(store, certification_captures) == 1 and count(store, certifications) == 2   # the records stay


def test_audit_rows_are_archived_with_the_chain_head(store, tmp_path):
    for i in range(30):
        store.audit(actor="t", operation="test.row", outcome="ok", detail={"i": i})
    with store.db.connect() as conn:
        first_ts = datetime.fromisoformat(conn.execute(sa.select(sa.func.min(audit_log.c.ts))).scalar())
        total = conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one()
    keep = timedelta(days=store.settings.retention_audit_days)
    assert run_at(store, first_ts + keep - SEC)["audit_rows"] == 0
    c = run_at(store, datetime.now(timezone.utc) + keep + timedelta(days=1))
    assert c["audit_rows"] >= total
    v = store.audit_verify()
    assert v["ok"], v                                    # the chain continues from the archived head
    files = sorted((tmp_path / "archive").glob("audit-*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sum(1 for r in rows if r["operation"] == "test.row") == 30 and oct((tmp_path / "archive" / files[0].name).stat().st_mode)[-3:] == "600"
    chain = audit.GENESIS
    for r in sorted({r["seq"]: r for r in rows}.values(), key=lambda r: r["seq"]):   # the archive verifies alone
        assert r["prev_hash"] == chain and audit.row_hash(chain, r) == r["hash"]
        chain = r["hash"]


def test_a_purge_killed_mid_way_loses_nothing_and_the_next_finishes(tmp_path):
    """kill -9 during `facegate retention run`: committed batches stay purged, nothing that must
    stay is gone, no person is half-erased; the next run (after the lease lapses) finishes."""
    from facegate.storage.store import Store
    from facegate.storage.aad import embedding_aad
    settings = make_settings(tmp_path, "", retention_lease_s=2.0)
    store = Store.open(settings)
    n = 1500
    now = clock.utcnow()
    with store.db.begin() as conn:
        conn.execute(subjects.insert(), [dict(subject_id=f"S-{i:05d}", status="deceased" if i % 3 else "active",
                                              status_since=T0, created_at=T0, updated_at=T0) for i in range(n)])
        pks = dict(conn.execute(sa.select(subjects.c.subject_id, subjects.c.pk)).all())
        rows = []
        for sid, pk in pks.items():
            blob, kid = store.keys.encrypt(vec(pk % 50).tobytes(), embedding_aad(sid, "p"))
            rows.append(dict(subject_pk=pk, pack_id="p", embedding_enc=blob, key_id=kid, created_at=now))
        conn.execute(templates.insert(), rows)
    store.close()
    deceased = sum(1 for i in range(n) if i % 3)
    env = {**os.environ, "FACEGATE_DATA_DIR": str(tmp_path), "FACEGATE_DATA_KEY": "", "FACEGATE_DATA_KEY_FILE": "",
           "FACEGATE_RETENTION_LEASE_S": "2", "FACEGATE_FIXED_NOW": (T0 + timedelta(days=31)).isoformat()}
    env.pop("FACEGATE_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "facegate", "retention", "run", "--json"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / "facegate.db"
    deadline = time.time() + 120
    while time.time() < deadline:
        with sqlite3.connect(db, timeout=30) as c:
            done = c.execute("SELECT count(*) FROM audit_log WHERE operation='retention.erase'").fetchone()[0]
        if done >= 20:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as c:
        erased = {r[0] for r in c.execute("SELECT subject_id FROM audit_log WHERE operation='retention.erase'")}
        left = dict(c.execute("SELECT s.subject_id, count(t.id) FROM subjects s LEFT JOIN templates t "
                              "ON t.subject_pk = s.pk GROUP BY s.subject_id").fetchall())
        finished = c.execute("SELECT count(*) FROM audit_log WHERE operation='retention.run'").fetchone()[0]
    assert finished == 0 and 20 <= len(erased) < deceased, (len(erased), deceased)   # killed mid-purge
    assert len(left) == n                                               # every subject row stays
    for i in range(n):
        sid = f"S-{i:05d}"
        # audited <=> erased: a batch commits its deletions with its audit rows, or neither
        assert left[sid] == (0 if sid in erased else 1), sid
    # the lease of the killed run lapses; the next run finishes, and one more finds nothing
    time.sleep(2.2)
    out = json.loads(cli(env, "retention", "run", "--json").stdout)
    assert out["counts"]["deceased_face_data"] == deceased - len(erased)
    assert json.loads(cli(env, "retention", "run", "--json").stdout)["counts"]["deceased_face_data"] == 0
    with sqlite3.connect(db) as c:
        held = dict(c.execute("SELECT s.status, count(t.id) FROM subjects s LEFT JOIN templates t ON t.subject_pk = s.pk "
                              "GROUP BY s.status").fetchall())
    assert held == {"deceased": 0, "active": n - deceased}
    assert json.loads(cli(env, "audit", "verify", "--json", check=False).stdout or '{"ok": true}')["ok"]


@pytest.mark.postgres
def test_two_replicas_purge_once(tmp_path):
    """Two servers on one PostgreSQL database start their in-service purge together: one runs it."""
    with fresh_database("postgresql", tmp_path) as url:
        servers = []
        for i in range(2):
            (tmp_path / f"r{i}").mkdir()
            srv = Server(tmp_path / f"r{i}", env={"FACEGATE_DATABASE_URL": url, "FACEGATE_DATA_KEY": "A" * 43 + "="},
                         retention_interval_s=3600)
            srv.env["FACEGATE_DATABASE_URL"] = url
            servers.append(srv)
        try:
            import threading
            failed = []

            def start(srv):
                try:
                    srv.start(timeout=240)
                except Exception as exc:        # noqa: BLE001 - reported below
                    failed.append(exc)

            threads = [threading.Thread(target=start, args=(srv,)) for srv in servers]   # both start at once
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not failed, failed
            time.sleep(3)
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                runs = conn.execute(sa.select(audit_log.c.actor).where(audit_log.c.operation == "retention.run")).all()
            engine.dispose()
            assert len(runs) == 1, runs
            for srv in servers:
                assert srv.alive()
        finally:
            for srv in servers:
                srv.stop()
