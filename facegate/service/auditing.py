"""Recording every decision and change of the API in the append-only audit log.

Entries hold who (key id, client/device id), what (operation, subject, outcome, scores) and
the request id — never image bytes or templates. Decisions are written by the inference job
itself (:func:`write`, no extra thread hop), before the answer is sent.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from facegate.service import metrics
from facegate.service.auth import ApiKey


def new_decision_id() -> str:
    return "d_" + uuid.uuid4().hex


@dataclass(frozen=True)
class Caller:
    """Who made the request: the key, the request id and the client/device id."""
    key: ApiKey | None
    request_id: str | None
    client_id: str | None


def caller(request: Request, key: ApiKey | None) -> Caller:
    from facegate.service.deps import client_id
    return Caller(key, getattr(request.state, "request_id", None), client_id(request, key))


def write(st, who: Caller, operation: str, outcome: str, subject_id: str | None = None,
          scores: dict | None = None, detail: dict | None = None) -> int:
    """Append one audit entry (blocking); returns its sequence number."""
    from facegate.storage import audit
    with metrics.stage("audit"):
        return audit.record(st.db, actor=who.key.actor if who.key else "anonymous", operation=operation,
                            outcome=outcome, key_id=who.key.key_id if who.key else None, subject_id=subject_id,
                            scores=scores, request_id=who.request_id, client_id=who.client_id, detail=detail)


async def record(st, request: Request, key: ApiKey | None, operation: str, outcome: str,
                 subject_id: str | None = None, scores: dict | None = None, detail: dict | None = None) -> int:
    """Append one audit entry for this request from async code."""
    return await run_in_threadpool(write, st, caller(request, key), operation, outcome, subject_id, scores, detail)
