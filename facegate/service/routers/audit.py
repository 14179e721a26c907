"""``GET /v1/audit`` (admin): pages of the append-only audit log, oldest first."""
from __future__ import annotations

import json

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from facegate.service.deps import ServiceState, require, state
from facegate.service.schemas import AuditPage

router = APIRouter(tags=["audit"])


def _json(text):
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparsed": text}
    return value if isinstance(value, dict) else {"value": value}


def read_entries(db, after_seq: int = 0, limit: int = 100, subject_id: str | None = None,
                 operation: str | None = None) -> dict:
    from facegate.storage.schema import audit_log as t
    query = sa.select(t).where(t.c.seq > after_seq).order_by(t.c.seq).limit(limit)
    if subject_id:
        query = query.where(t.c.subject_id == subject_id)
    if operation:
        query = query.where(t.c.operation == operation)
    with db.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    entries = [{**{k: r[k] for k in ("seq", "ts", "actor", "key_id", "operation", "subject_id", "outcome",
                                     "request_id", "client_id", "hash")},
                "scores": _json(r["scores"]), "detail": _json(r["detail"])} for r in rows]
    return {"entries": entries, "next_after_seq": entries[-1]["seq"] if len(entries) == limit else None}


@router.get("/v1/audit", response_model=AuditPage)
async def list_audit(after_seq: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000),
                     subject_id: str | None = Query(None, max_length=128),
                     operation: str | None = Query(None, max_length=64),
                     key=Depends(require("audit:read")), st: ServiceState = Depends(state)):
    return await run_in_threadpool(read_entries, st.db, after_seq, limit, subject_id, operation)
