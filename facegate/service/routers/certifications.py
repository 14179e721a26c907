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

from facegate.clock import parse_instant
from facegate.errors import FacegateError
from facegate.service import auditing, metrics
from facegate.service.deps import StateDep, require
from facegate.service.schemas import CertificationOut, CertificationStatuses, FraudSignals, SubjectCertifications
from facegate.service.uploads import image_field, openapi_body, read_fields, text_field
from facegate.vocab import MANUAL_OUTCOMES
from facegate.workflows.certification.certify import certify as attempt

router = APIRouter(tags=["certification"])


@router.post("/v1/certifications", status_code=201, response_model=CertificationOut,
             openapi_extra=openapi_body(("image",), {"subject_id": {"type": "string"},
                                                     "liveness_session_id": {"type": "string"}},
                                        ("subject_id", "liveness_session_id")))
async def certify(request: Request, st: StateDep, key=Depends(require("certify"))):
    s = st.settings
    subject_id = None
    try:
        fields = await read_fields(request, s.max_image_bytes)
        subject_id = text_field(fields, "subject_id", required=True, max_len=128)
        session_id = text_field(fields, "liveness_session_id", required=True, max_len=128)
        image = image_field(fields, "image", s.max_image_bytes, required=False)
        who = auditing.caller(request, key)
        await run_in_threadpool(st.ledger.attempts, subject_id)        # unknown_subject before the session is used
        liveness = st.workflows.consume_liveness(session_id, key)

        def job():
            result = attempt(st.workflows, st.ledger, who, subject_id, liveness, image,
                             decision_id=auditing.new_decision_id(), also=st.review.keeper(liveness, image))
            metrics.DECISIONS.labels("certify", result["outcome"]).inc()
            return result

        return await st.pool.run(job)
    except FacegateError as exc:
        await auditing.record(st, request, key, "certify", exc.code, subject_id=subject_id)
        raise


@router.post("/v1/certifications/manual", status_code=201, response_model=CertificationOut,
             openapi_extra=openapi_body((), {"subject_id": {"type": "string"},
                                             "outcome": {"type": "string", "enum": list(MANUAL_OUTCOMES)},
                                             "note": {"type": "string"}}, ("subject_id", "outcome", "note")))
async def certify_manually(request: Request, st: StateDep, key=Depends(require("certify:manual"))):
    fields = await read_fields(request, st.settings.max_image_bytes)
    subject_id = text_field(fields, "subject_id", required=True, max_len=128)
    outcome = text_field(fields, "outcome", required=True, max_len=32)
    note = text_field(fields, "note", required=True, max_len=2000)
    who = auditing.caller(request, key)
    return await run_in_threadpool(lambda: st.ledger.manual(subject_id, outcome, note, who=who))


@router.get("/v1/certifications", response_model=CertificationStatuses)
async def list_certifications(st: StateDep, period: str | None = None, status: str | None = None,
                              as_of: str | None = None, include_inactive: bool = False,
                              limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0, le=2**62),
                              key=Depends(require("certifications:read"))):
    try:
        return await run_in_threadpool(st.ledger.statuses, period, status, parse_instant(as_of), limit, offset,
                                       include_inactive)
    except ValueError as exc:          # a malformed period name
        raise FacegateError("invalid_request", str(exc), field="period")


@router.get("/v1/certifications/{subject_id}", response_model=SubjectCertifications)
async def subject_certifications(subject_id: str, st: StateDep, key=Depends(require("certifications:read"))):
    return {"subject_id": subject_id, "attempts": await run_in_threadpool(st.ledger.attempts, subject_id)}


@router.get("/v1/fraud-signals", response_model=FraudSignals)
async def list_fraud_signals(st: StateDep, kind: str | None = None, subject_id: str | None = None,
                             period: str | None = None, limit: int = Query(100, ge=1, le=10_000),
                             offset: int = Query(0, ge=0, le=2**62), key=Depends(require("certifications:read"))):
    return {"signals": await run_in_threadpool(st.ledger.signals, kind, subject_id, period, limit, offset)}
