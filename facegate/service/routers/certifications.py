"""Pension-eligibility certification over HTTP.

- ``POST /v1/certifications`` (app; fields ``subject_id``, ``liveness_session_id`` of a passed
  session, optional ``image``: a still from the same capture) -> ``certified`` / ``failed`` /
  ``manual_review`` with reasons, valid until the end of the period, and any fraud signals.
- ``POST /v1/certifications/manual`` (operator) ``subject_id``, ``outcome``
  (certified|failed), ``note`` (how the person was checked): face is never the only way.
- ``GET /v1/certifications?period=&status=certified|due|overdue|failed|manual_review&as_of=``
  (operator): who has certified, who is due, who is overdue.
- ``GET /v1/certifications/{subject_id}``: one subject's attempts.
- ``GET /v1/fraud-signals?kind=&subject_id=&period=`` (operator).
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from facegate.workflows.certification.ledger import CertificationLedger
from facegate.clock import parse_instant
from facegate.errors import FacegateError
from facegate.service import auditing, metrics
from facegate.service.deps import ServiceState, require, state
from facegate.service.pipeline import analyse_face
from facegate.service.routers.verify import check_liveness
from facegate.service.uploads import image_field, openapi_body, read_fields, text_field

router = APIRouter(tags=["certification"])


def ledger(st: ServiceState) -> CertificationLedger:
    if getattr(st, "ledger", None) is None:
        st.ledger = CertificationLedger(st.settings, st.gallery.store, st.engine, st.gallery)
    return st.ledger


@router.post("/v1/certifications", status_code=201,
             openapi_extra=openapi_body(("image",), {"subject_id": {"type": "string"},
                                                     "liveness_session_id": {"type": "string"}},
                                        ("subject_id", "liveness_session_id")))
async def certify(request: Request, key=Depends(require("certify")), st: ServiceState = Depends(state)):
    s = st.settings
    subject_id = None
    try:
        fields = await read_fields(request, s.max_image_bytes)
        subject_id = text_field(fields, "subject_id", required=True, max_len=128)
        session_id = text_field(fields, "liveness_session_id", required=True, max_len=128)
        image = image_field(fields, "image", s.max_image_bytes, required=False)
        who = auditing.caller(request, key)
        led = ledger(st)
        await run_in_threadpool(led.attempts, subject_id)        # unknown_subject before the session is used
        liveness = check_liveness(st, session_id, key)

        def job():
            embedding = liveness.pop("embedding", None) if liveness else None
            quality = None
            if image is not None:
                face = analyse_face(st.engine, image, policy="single")
                quality = face.quality.score
                if embedding is not None and liveness.get("passed"):
                    threshold, _ = st.engine.operating_points.threshold_for(s.liveness_identity_fmr)
                    if st.engine.similarity(embedding, face.embedding) < threshold:
                        liveness["passed"] = False
                        liveness.setdefault("checks", []).append("capture_face_mismatch")
                embedding = face.embedding
            result = led.attempt(subject_id, embedding, liveness, quality, actor=who.key.actor,
                                 key_id=who.key.key_id, client_id=who.client_id, request_id=who.request_id,
                                 decision_id=auditing.new_decision_id())
            metrics.DECISIONS.labels("certify", result["outcome"]).inc()
            return result

        return await st.pool.run(job)
    except FacegateError as exc:
        await auditing.record(st, request, key, "certify", exc.code, subject_id=subject_id)
        raise


@router.post("/v1/certifications/manual", status_code=201,
             openapi_extra=openapi_body((), {"subject_id": {"type": "string"},
                                             "outcome": {"type": "string", "enum": ["certified", "failed"]},
                                             "note": {"type": "string"}}, ("subject_id", "outcome", "note")))
async def certify_manually(request: Request, key=Depends(require("certify:manual")),
                           st: ServiceState = Depends(state)):
    fields = await read_fields(request, st.settings.max_image_bytes)
    subject_id = text_field(fields, "subject_id", required=True, max_len=128)
    outcome = text_field(fields, "outcome", required=True, max_len=32)
    note = text_field(fields, "note", required=True, max_len=2000)
    who = auditing.caller(request, key)
    return await run_in_threadpool(ledger(st).manual, subject_id, outcome, note, actor=who.key.actor,
                                   key_id=who.key.key_id, client_id=who.client_id, request_id=who.request_id)


@router.get("/v1/certifications")
async def list_certifications(period: str | None = None, status: str | None = None, as_of: str | None = None,
                              include_inactive: bool = False, limit: int = Query(100, ge=1, le=10_000),
                              offset: int = Query(0, ge=0), key=Depends(require("certifications:read")),
                              st: ServiceState = Depends(state)):
    try:
        return await run_in_threadpool(ledger(st).statuses, period, status, parse_instant(as_of), limit, offset,
                                       include_inactive)
    except ValueError as exc:          # a malformed period name
        raise FacegateError("invalid_request", str(exc), field="period")


@router.get("/v1/certifications/{subject_id}")
async def subject_certifications(subject_id: str, key=Depends(require("certifications:read")),
                                 st: ServiceState = Depends(state)):
    return {"subject_id": subject_id, "attempts": await run_in_threadpool(ledger(st).attempts, subject_id)}


@router.get("/v1/fraud-signals")
async def list_fraud_signals(kind: str | None = None, subject_id: str | None = None, period: str | None = None,
                             limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0),
                             key=Depends(require("certifications:read")), st: ServiceState = Depends(state)):
    return {"signals": await run_in_threadpool(ledger(st).signals, kind, subject_id, period, limit, offset)}
