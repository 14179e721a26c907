"""``POST /v1/verify``: is this the enrolled subject? (1:1 against the subject's templates).

Fields: ``subject_id``, ``image``; optional ``liveness_session_id`` (a passed liveness session
of this key, consumed here) and ``fmr`` (operating point). The answer is ``match`` /
``no_match`` / ``manual_review`` (see :mod:`facegate.matching.decisions`): the face is one
factor, never the only way in.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from facegate.errors import FacegateError
from facegate.service import auditing, auth, metrics
from facegate.service.deps import StateDep, require
from facegate.service.schemas import VerifyOut
from facegate.service.uploads import image_field, number_field, openapi_body, read_fields, text_field
from facegate.workflows import verification

router = APIRouter(tags=["matching"])


@router.post("/v1/verify", response_model=VerifyOut,
             openapi_extra=openapi_body(("image",), {"subject_id": {"type": "string"},
                                                     "liveness_session_id": {"type": "string"},
                                                     "fmr": {"type": "number"}}, ("subject_id", "image")))
async def verify(request: Request, st: StateDep, key=Depends(require("verify"))):
    s = st.settings
    subject_id = None
    try:
        fields = await read_fields(request, s.max_image_bytes)
        subject_id = text_field(fields, "subject_id", required=True, max_len=128)
        image = image_field(fields, "image", s.max_image_bytes)
        fmr = number_field(fields, "fmr", float, None, 1e-7, 0.5)
        session_id = text_field(fields, "liveness_session_id", max_len=128)
        if key.role in auth.SESSION_BOUND_VERIFY:          # checked before the session is used
            session = await run_in_threadpool(st.liveness.sessions.get, session_id, key.key_id) if session_id else None
            auth.verify_scope(key, subject_id, session and session.subject_id)
        liveness = st.workflows.consume_liveness(session_id, key, subject_id)
        who = auditing.caller(request, key)

        def job():
            result = verification.verify(st.workflows, subject_id, image, fmr, liveness)
            d = result.decision
            decision_id = auditing.new_decision_id()
            metrics.DECISIONS.labels("verify", d.decision).inc()
            auditing.write(st, who, "verify", d.decision, subject_id=subject_id,
                           scores={"score": round(d.score, 6), "threshold": round(d.point.threshold, 6),
                                   "quality": round(result.face.quality.score, 3)},
                           detail={"decision_id": decision_id, "face_id": result.face_id,
                                   "review_reasons": list(d.reasons),
                                   "liveness_session_id": liveness and liveness.session_id})
            return {**result.as_dict(), "decision_id": decision_id, "request_id": who.request_id,
                    "pack_id": st.engine.pack_id}

        return await st.pool.run(job)
    except FacegateError as exc:
        await auditing.record(st, request, key, "verify", exc.code, subject_id=subject_id)
        raise
