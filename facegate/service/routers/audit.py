"""``GET /v1/audit`` (admin): pages of the append-only audit log, oldest first."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from facegate.service.deps import ServiceState, require, state
from facegate.service.schemas import AuditPage
from facegate.storage import audit

router = APIRouter(tags=["audit"])


@router.get("/v1/audit", response_model=AuditPage)
async def list_audit(after_seq: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000),
                     subject_id: str | None = Query(None, max_length=128),
                     operation: str | None = Query(None, max_length=64),
                     key=Depends(require("audit:read")), st: ServiceState = Depends(state)):
    return await run_in_threadpool(audit.page, st.db, after_seq, limit, subject_id, operation)
