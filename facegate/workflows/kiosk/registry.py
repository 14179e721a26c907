"""Self-service kiosks: registered devices, each with its own API key, and their statistics.

A kiosk's key has role ``kiosk`` and carries the kiosk id as its client id, so every decision
it makes is recorded against it (audit trail, ``kiosk_events``, ``/metrics``).
"""
from __future__ import annotations

import re
import secrets
from datetime import datetime

import numpy as np
import sqlalchemy as sa

from facegate.clock import iso, utcnow
from facegate.errors import FacegateError
from facegate.storage import apikeys, audit
from facegate.storage.db import write_transaction
from facegate.storage.schema import kiosk_events, kiosks

_KIOSK_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _dict(row) -> dict:
    m = row._mapping
    return {"kiosk_id": m["kiosk_id"], "location": m["location"], "key_id": m["key_id"], "status": m["status"],
            "created_at": iso(m["created_at"]), "disabled_at": iso(m["disabled_at"])}


def add_kiosk(db: sa.Engine, location: str, kiosk_id: str | None = None,
              rate_limit_per_minute: int | None = None, actor: str = "system") -> tuple[str, dict]:
    """Register a kiosk with its key, in one audited transaction. Returns (the key's secret,
    shown once; the kiosk)."""
    kiosk_id = kiosk_id or "kiosk-" + secrets.token_hex(4)
    if not _KIOSK_ID.match(kiosk_id):
        raise FacegateError("invalid_request", "a kiosk id is 1-64 letters, digits, '.', '_' or '-'")
    if not location or not location.strip():
        raise FacegateError("invalid_request", "a kiosk needs a location")
    with write_transaction(db) as conn:
        if conn.execute(sa.select(kiosks.c.kiosk_id).where(kiosks.c.kiosk_id == kiosk_id)).first():
            raise FacegateError("invalid_request", f"kiosk {kiosk_id!r} already exists")
        secret, key = apikeys.insert_key(conn, "kiosk", actor=actor, name=f"kiosk {kiosk_id}", client_id=kiosk_id,
                                         rate_limit_per_minute=rate_limit_per_minute)
        conn.execute(kiosks.insert().values(kiosk_id=kiosk_id, location=location.strip(), key_id=key.key_id,
                                            status="active", created_at=utcnow()))
        audit.append(conn, actor=actor, operation="kiosk.add", outcome="ok", key_id=key.key_id, client_id=kiosk_id,
                     detail={"kiosk_id": kiosk_id, "location": location.strip()})
        return secret, _dict(conn.execute(sa.select(kiosks).where(kiosks.c.kiosk_id == kiosk_id)).one())


def list_kiosks(db: sa.Engine) -> list[dict]:
    with db.connect() as conn:
        return [_dict(r) for r in conn.execute(sa.select(kiosks).order_by(kiosks.c.kiosk_id))]


def disable_kiosk(db: sa.Engine, kiosk_id: str, actor: str = "system") -> dict:
    """Disable a kiosk and revoke its key, in one audited transaction: it can no longer call the API."""
    with write_transaction(db) as conn:
        row = conn.execute(sa.select(kiosks).where(kiosks.c.kiosk_id == kiosk_id)).first()
        if row is None:
            raise FacegateError("not_found", f"no kiosk {kiosk_id!r}")
        apikeys.mark_revoked(conn, row.key_id, actor=actor)
        if row.status == "active":
            conn.execute(kiosks.update().where(kiosks.c.kiosk_id == kiosk_id)
                         .values(status="disabled", disabled_at=utcnow()))
            audit.append(conn, actor=actor, operation="kiosk.disable", outcome="ok", key_id=row.key_id,
                         client_id=kiosk_id, detail={"kiosk_id": kiosk_id})
        return _dict(conn.execute(sa.select(kiosks).where(kiosks.c.kiosk_id == kiosk_id)).one())


def record_event(conn: sa.Connection, kiosk_id: str, mode: str, decision: str, reason: str | None,
                 latency_ms: float) -> bool:
    """One authentication in ``kiosk_events``; returns whether ``kiosk_id`` is a registered kiosk
    (only those name a metric series: a key's id must not grow /metrics without bound)."""
    conn.execute(kiosk_events.insert().values(kiosk_id=kiosk_id, mode=mode, decision=decision, reason=reason,
                                              latency_ms=round(float(latency_ms), 2), created_at=utcnow()))
    return conn.execute(sa.select(kiosks.c.kiosk_id).where(kiosks.c.kiosk_id == kiosk_id)).first() is not None


def report(db: sa.Engine, since: datetime | None = None) -> list[dict]:
    """Per kiosk: attempts, accepts, rejects and manual reviews by reason, median latency."""
    q = sa.select(kiosk_events.c.kiosk_id, kiosk_events.c.decision, kiosk_events.c.reason,
                  kiosk_events.c.latency_ms)
    if since is not None:
        q = q.where(kiosk_events.c.created_at >= since)
    stats: dict[str, dict] = {}
    latencies: dict[str, list[float]] = {}
    with db.connect() as conn:
        registered = {r.kiosk_id: r.location for r in conn.execute(sa.select(kiosks.c.kiosk_id, kiosks.c.location))}
        for kiosk_id, decision, reason, latency in conn.execute(q):
            s = stats.setdefault(kiosk_id, {"kiosk_id": kiosk_id, "attempts": 0, "accepts": 0, "rejects": 0,
                                            "manual_reviews": 0, "errors": 0, "by_reason": {}})
            s["attempts"] += 1
            key = {"match": "accepts", "no_match": "rejects", "manual_review": "manual_reviews"}.get(decision, "errors")
            s[key] += 1
            if decision != "match":
                r = reason or decision
                s["by_reason"][r] = s["by_reason"].get(r, 0) + 1
            latencies.setdefault(kiosk_id, []).append(latency)
    out = []
    for kiosk_id in sorted(set(registered) | set(stats)):
        s = stats.get(kiosk_id, {"kiosk_id": kiosk_id, "attempts": 0, "accepts": 0, "rejects": 0,
                                 "manual_reviews": 0, "errors": 0, "by_reason": {}})
        lat = latencies.get(kiosk_id)
        s["median_latency_ms"] = round(float(np.median(lat)), 1) if lat else None
        s["location"] = registered.get(kiosk_id)
        out.append(s)
    return out
