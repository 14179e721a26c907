"""``POST /v1/kiosk/authenticate``: the self-service kiosk's decision; ``GET
/v1/kiosk/reviews/{id}``: the kiosk waits for the person who decides a search it could not.

Fields: the live capture as ``image`` and/or a passed ``liveness_session_id``, and one of
``document_image`` (the ID card's chip photo), ``subject_id`` (1:1) or neither (1:N search):
see :mod:`facegate.workflows.kiosk.authentication`. The kiosk is the key's: its client id (a
kiosk key made by ``facegate kiosks add``) or its key id.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import suppress

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from facegate.clock import parse_instant, utcnow
from facegate.errors import FacegateError
from facegate.service import auditing, metrics
from facegate.service.deps import StateDep, require
from facegate.service.review_waits import POLL_WITH_FEED_S, POLL_WITHOUT_FEED_S
from facegate.service.schemas import KioskOut, KioskReviewOut
from facegate.service.uploads import image_field, number_field, openapi_body, read_fields, text_field
from facegate.workflows.kiosk.authentication import authenticate as decide, kiosk_mode, record_refusal

router = APIRouter(tags=["kiosk"])


@router.post("/v1/kiosk/authenticate", response_model=KioskOut,
             openapi_extra=openapi_body(("image", "document_image"),
                                        {"liveness_session_id": {"type": "string"}, "subject_id": {"type": "string"},
                                         "top_k": {"type": "integer"}, "fmr": {"type": "number"}}, ()))
async def authenticate(request: Request, st: StateDep, key=Depends(require("kiosk:authenticate"))):
    s = st.settings
    t0 = time.perf_counter()
    who = auditing.caller(request, key)
    kiosk_id = who.client_id or key.key_id
    mode = "unknown"
    try:
        fields = await read_fields(request, s.max_image_bytes)
        image = image_field(fields, "image", s.max_image_bytes, required=False)
        document = image_field(fields, "document_image", s.max_image_bytes, required=False)
        subject_id = text_field(fields, "subject_id", max_len=128)
        top_k = number_field(fields, "top_k", int, s.identify_top_k, 1, 50)
        fmr = number_field(fields, "fmr", float, None, 1e-7, 0.5)
        mode = kiosk_mode(document, subject_id)
        liveness = st.workflows.consume_liveness(text_field(fields, "liveness_session_id", max_len=128), key,
                                                 subject_id)

        def job():
            decision_id = auditing.new_decision_id()
            answer = decide(st.workflows, who, kiosk_id, mode, t0, image=image, document=document,
                            subject_id=subject_id, top_k=top_k, fmr=fmr, liveness=liveness, decision_id=decision_id,
                            also=st.review.kiosk_keeper(liveness, image, key_id=key.key_id))
            label = metrics.kiosk_label(kiosk_id, answer.registered)
            metrics.KIOSK_DECISIONS.labels(label, mode, answer.decision.decision).inc()
            metrics.KIOSK_SECONDS.labels(label).observe(answer.latency_ms / 1000)
            return {**answer.as_dict(), "decision_id": decision_id, "request_id": who.request_id,
                    "pack_id": st.engine.pack_id}

        return await st.pool.run(job)
    except FacegateError as exc:
        registered = await run_in_threadpool(record_refusal, st.db, who, kiosk_id, mode, exc.code, t0)
        metrics.KIOSK_DECISIONS.labels(metrics.kiosk_label(kiosk_id, registered), mode, "error").inc()
        raise


MAX_WAIT_S = 60


@router.get("/v1/kiosk/reviews/{review_case_id}", response_model=KioskReviewOut)
async def review(st: StateDep, review_case_id: int = Path(ge=1, le=2**31 - 1),
                 wait: float = Query(0, ge=0, le=MAX_WAIT_S, description="seconds to wait for a decision (long poll)"),
                 key=Depends(require("kiosk:authenticate"))):
    """The answer to a kiosk search that went to a person (``review_case_id`` of the kiosk's
    answer), for the kiosk key that opened it (any other key: ``unknown_case``, 404). With
    ``wait``, the call returns when a reviewer decides, the case expires, or ``wait`` runs out
    (then ``pending``: ask again)."""
    deadline = time.monotonic() + wait
    with st.review_waits.watch(review_case_id) as announced:
        while True:
            announced.clear()
            out = await run_in_threadpool(st.review.kiosk_review, review_case_id, key.key_id)
            left = deadline - time.monotonic()
            if out["status"] != "pending" or left <= 0:
                return out
            feed = st.listener is not None and st.listener.connected.is_set()
            nap = min(left, POLL_WITH_FEED_S if feed else POLL_WITHOUT_FEED_S)
            until = (parse_instant(out["wait_until"], "wait_until") - utcnow()).total_seconds() \
                if out["wait_until"] else 0.0
            if until > 0:                          # wake when the case ends unless somebody holds it
                nap = min(nap, until + 0.05)
            with suppress(TimeoutError):
                await asyncio.wait_for(announced.wait(), nap)
