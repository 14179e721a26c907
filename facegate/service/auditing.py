"""Recording every decision and change of the API in the append-only audit log.

Entries hold who (key id, client/device id), what (operation, subject, outcome, scores) and
the request id — never image bytes or templates.
"""
from __future__ import annotations

import uuid

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from facegate.service.auth import ApiKey


def new_decision_id() -> str:
    return "d_" + uuid.uuid4().hex


def _append(db, **entry) -> int:
    from facegate import audit
    return audit.record(db, **entry)


async def record(st, request: Request, key: ApiKey | None, operation: str, outcome: str,
                 subject_id: str | None = None, scores: dict | None = None, detail: dict | None = None) -> int:
    """Append one audit entry for this request; returns its sequence number."""
    from facegate.service.deps import client_id
    return await run_in_threadpool(
        _append, st.db, actor=key.actor if key else "anonymous", operation=operation, outcome=outcome,
        key_id=key.key_id if key else None, subject_id=subject_id, scores=scores,
        request_id=getattr(request.state, "request_id", None), client_id=client_id(request, key),
        detail=detail)
