"""The audit trail: an append-only, hash-chained table (``audit_log``).

Each row's ``hash`` is sha256(``prev_hash`` + canonical JSON of its other stored fields, ``seq``
excepted), and ``prev_hash`` is the previous row's hash (64 zeros for the first row), so editing,
removing or reordering rows breaks the chain and :func:`verify` finds the first bad row. (Cutting
rows off the end is only detectable against a head hash kept elsewhere, e.g. exported logs.)

Rows never hold images or templates: operations, outcomes, scores and ids only.

``append`` must run inside a write transaction: on SQLite, :func:`facegate.storage.db.write_transaction`
(``BEGIN IMMEDIATE`` serialises writers); on PostgreSQL, any transaction (``append`` takes the
shared facegate advisory lock itself), so concurrent writers keep one chain.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from facegate.storage import ratelimits
from facegate.storage.db import WRITE_LOCK_KEY, write_transaction
from facegate.storage.schema import audit_log, store_info

GENESIS = "0" * 64
HASHED_FIELDS = ("ts", "actor", "key_id", "operation", "subject_id", "outcome", "scores", "request_id",
                 "client_id", "detail")


@dataclass(frozen=True)
class Actor:
    """Who a recorded operation is attributed to: ``actor`` (``key:<id>``, ``cli:<user>``,
    ``anonymous``), the API key, the kiosk/device and the request."""
    actor: str
    key_id: str | None = None
    client_id: str | None = None
    request_id: str | None = None

    def fields(self) -> dict:
        return {"actor": self.actor, "key_id": self.key_id, "client_id": self.client_id, "request_id": self.request_id}


def _json(value) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hash(prev_hash: str, fields: dict) -> str:
    body = json.dumps({k: fields.get(k) for k in HASHED_FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


ARCHIVE_HEAD = "audit_archive_head"
IMAGE_VIEW = "evidence.view"      # a person looked at a subject's stored image (the console's evidence and reference photos)


def _archive_head(conn: sa.Connection) -> str | None:
    """The hash of the last row archived by the retention purge (every row may be archived)."""
    head = conn.execute(sa.select(store_info.c.value).where(store_info.c.name == ARCHIVE_HEAD)).scalar()
    return json.loads(head)["hash"] if head else None


def append(conn: sa.Connection, *, actor: str, operation: str, outcome: str, key_id: str | None = None,
           subject_id: str | None = None, scores=None, request_id: str | None = None,
           client_id: str | None = None, detail=None) -> int:
    """Append one row to the chain; returns its ``seq``."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY})
    prev = conn.execute(sa.select(audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)).scalar()
    prev = prev or _archive_head(conn) or GENESIS
    fields = {
        "ts": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "actor": actor, "key_id": key_id, "operation": operation, "subject_id": subject_id,
        "outcome": outcome, "scores": _json(scores), "request_id": request_id, "client_id": client_id,
        "detail": _json(detail),
    }
    result = conn.execute(audit_log.insert().values(**fields, prev_hash=prev, hash=row_hash(prev, fields)))
    return int(result.inserted_primary_key[0])


def record(db: sa.Engine, **fields) -> int:
    """``append`` in its own write transaction."""
    with write_transaction(db) as conn:
        return append(conn, **fields)


# Refusals and failed sign-ins, which anyone can cause without a key, are audited at most this
# often per source address (shared by every replica through the rate buckets), so a caller
# knocking from outside cannot flood the trail or queue the writes behind it.
REFUSALS_PER_MINUTE = 30


def record_capped(db: sa.Engine, source: str, **fields) -> bool:
    """:func:`record` unless ``source`` is over :data:`REFUSALS_PER_MINUTE`; False when it was not written."""
    if not ratelimits.take(db, f"refusal:{source}", REFUSALS_PER_MINUTE).allowed:
        return False
    record(db, **fields)
    return True


def verify(conn: sa.Connection) -> dict:
    """Walk the chain: ``{"ok", "rows", "first_bad_seq"}``. Rows archived by the retention purge
    (:mod:`facegate.storage.retention`) left their last hash as the archive head in
    ``store_info``: the chain in the database starts there."""
    prev = _archive_head(conn) or GENESIS
    rows = 0
    result = conn.execution_options(yield_per=5000).execute(sa.select(audit_log).order_by(audit_log.c.seq))
    for row in result.mappings():
        rows += 1
        if row["prev_hash"] != prev or row_hash(row["prev_hash"], dict(row)) != row["hash"]:
            return {"ok": False, "rows": rows, "first_bad_seq": int(row["seq"])}
        prev = row["hash"]
    return {"ok": True, "rows": rows, "first_bad_seq": None}


def _decoded(text: str | None) -> dict | None:
    """A JSON field as a dict (a row edited by hand to hold something else is still shown)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparsed": text}
    return value if isinstance(value, dict) else {"value": value}


def rows(conn: sa.Connection, *, subject_id: str | None = None, operation: str | None = None,
         since_seq: int = 0, limit: int = 100) -> list[dict]:
    """Audit rows (JSON fields decoded), oldest first."""
    q = sa.select(audit_log).where(audit_log.c.seq > since_seq).order_by(audit_log.c.seq).limit(limit)
    if subject_id is not None:
        q = q.where(audit_log.c.subject_id == subject_id)
    if operation is not None:
        q = q.where(audit_log.c.operation == operation)
    return [{**r, "scores": _decoded(r["scores"]), "detail": _decoded(r["detail"])} for r in conn.execute(q).mappings()]


def page(db: sa.Engine, after_seq: int = 0, limit: int = 100, subject_id: str | None = None,
         operation: str | None = None) -> dict:
    """One page of the trail for readers (the API and ``facegate audit list``), with the cursor
    of the next page when this one is full."""
    with db.connect() as conn:
        entries = [{k: v for k, v in r.items() if k != "prev_hash"}
                   for r in rows(conn, subject_id=subject_id, operation=operation, since_seq=after_seq, limit=limit)]
    return {"entries": entries, "next_after_seq": entries[-1]["seq"] if len(entries) == limit else None}
