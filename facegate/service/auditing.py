"""Recording every decision and change of the API in the append-only audit log.

Entries hold who (key id, client/device id), what (operation, subject, outcome, scores) and
the request id — never image bytes or templates. Decisions are written by the inference job
itself (:func:`write`, no extra thread hop), before the answer is sent.
"""
from __future__ import annotations

import uuid

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from facegate.errors import FacegateError
from facegate.service import metrics
from facegate.storage import audit
from facegate.storage.apikeys import ApiKey
from facegate.storage.audit import Actor


def new_decision_id() -> str:
    return "d_" + uuid.uuid4().hex


def caller(request: Request, key: ApiKey | None) -> Actor:
    """Who made the request: the key, its client/device id (checked by ``require``) and the request id."""
    return Actor(key.actor if key else "anonymous", key.key_id if key else None,
                 getattr(request.state, "client_id", None), getattr(request.state, "request_id", None))


def write_capped(st, source: str, who: Actor, operation: str, outcome: str, detail: dict) -> bool:
    """Audit what anyone can cause without a key (a refused call, a failed sign-in) at most
    :data:`facegate.storage.audit.REFUSALS_PER_MINUTE` per source address; False (and counted in
    ``facegate_refusals_unaudited_total``) when it was left out."""
    written = audit.record_capped(st.db, source, **who.fields(), operation=operation, outcome=outcome,
                                  detail=detail)
    if not written:
        metrics.REFUSALS_UNAUDITED.inc()
    return written


def record_refusal(st, request: Request, key: ApiKey | None, exc: FacegateError) -> bool:
    """Audit a refused call: who (the key when one was recognised, else ``anonymous``), the
    route, the client, the source address and the request id (capped: :func:`write_capped`)."""
    source = request.client.host if request.client else "unknown"
    who = Actor(key.actor if key else "anonymous", key.key_id if key else None,
                request.headers.get("x-client-id", "")[:64] or None, getattr(request.state, "request_id", None))
    return write_capped(st, source, who, "auth.refused", exc.code,
                        {"route": request.url.path[:200], "method": request.method, "source": source,
                         "reason": exc.message[:200]})


def write(st, who: Actor, operation: str, outcome: str, subject_id: str | None = None,
          scores: dict | None = None, detail: dict | None = None) -> int:
    """Append one audit entry (blocking); returns its sequence number."""
    with metrics.stage("audit"):
        return audit.record(st.db, **who.fields(), operation=operation, outcome=outcome, subject_id=subject_id,
                            scores=scores, detail=detail)


async def record(st, request: Request, key: ApiKey | None, operation: str, outcome: str,
                 subject_id: str | None = None, scores: dict | None = None, detail: dict | None = None) -> int:
    """Append one audit entry for this request from async code."""
    return await run_in_threadpool(write, st, caller(request, key), operation, outcome, subject_id, scores, detail)
