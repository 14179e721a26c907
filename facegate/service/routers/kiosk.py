"""``POST /v1/kiosk/authenticate``: the self-service kiosk's decision.

Fields: the live capture as ``image`` and/or a passed ``liveness_session_id``, and one of
``document_image`` (the ID card's chip photo), ``subject_id`` (1:1) or neither (1:N search):
see :mod:`facegate.workflows.kiosk.authentication`. The kiosk is the key's: its client id (a
kiosk key made by ``facegate kiosks add``) or its key id.
"""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from facegate.errors import FacegateError
from facegate.service import auditing, metrics
from facegate.service.deps import StateDep, require
from facegate.service.schemas import KioskOut
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
                            also=st.review.kiosk_keeper(liveness, image))
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
