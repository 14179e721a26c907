"""Notice, consent, withdrawal and the way without a face over HTTP (docs/compliance.md).

- ``GET /v1/notices/current``: the notice in force (zh-CN and English) and its version.
- ``POST /v1/liveness/sessions/{id}/consent`` (the capture page, with the session's capture
  token): ``{"decision": "given"|"declined", "notice_version"}``. Declined closes the session
  (nothing is captured) and answers the deployer's alternative in words.
- ``POST /v1/subjects/{id}/consents`` (operator): a consent given or declined at a counter;
  a minor's names the ``guardian``. ``GET`` lists the subject's records.
- ``POST /v1/subjects/{id}/consent/withdraw`` (operator): withdrawal: the person's face
  information is erased physically; the audit and consent rows stay; later decisions answer
  ``consent_withdrawn``.
- ``POST /v1/certifications/alternative`` (operator): a certification by a way without a face
  (counter, home_visit, video_call, document), with who checked and how.
- ``POST /v1/subjects/{id}/alternative-offered`` (operator): the way without a face was offered.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from facegate.errors import FacegateError
from facegate.service import auditing
from facegate.service.deps import CaptureCaller, StateDep, capture_access, require
from facegate.service.schemas import (AlternativeIn, AlternativeOffered, CaptureConsentIn, CaptureConsentOut,
                                      CertificationOut, ConsentIn, ConsentList, ConsentOut, NoticeOut, WithdrawalOut,
                                      WithdrawIn)
from facegate.storage import notices
from facegate.storage.audit import Actor
from facegate.workflows.consent import consent as flows

router = APIRouter(tags=["compliance"])

SubjectId = Path(min_length=1, max_length=128)


@router.get("/v1/notices/current", response_model=NoticeOut)
async def current_notice(st: StateDep, key=Depends(require("subjects:read"))):
    notice = await run_in_threadpool(notices.current, st.db)
    if notice is None:
        raise FacegateError("notice_missing")
    return notice


@router.post("/v1/liveness/sessions/{session_id}/consent", status_code=201, response_model=CaptureConsentOut)
async def capture_consent(session_id: str, body: CaptureConsentIn, request: Request, st: StateDep,
                          caller: CaptureCaller = Depends(capture_access())):
    who = (auditing.caller(request, caller.key) if caller.key is not None
           else Actor(caller.actor, caller.owner, None, getattr(request.state, "request_id", None)))
    return await run_in_threadpool(flows.answer_on_capture, st.db, st.settings, session_id, body.decision,
                                   body.notice_version, who, caller.owner)


@router.post("/v1/subjects/{subject_id}/consents", status_code=201, response_model=ConsentOut)
async def record_consent(body: ConsentIn, request: Request, st: StateDep, subject_id: str = SubjectId,
                         key=Depends(require("consent:write"))):
    who = auditing.caller(request, key)
    g = body.guardian
    return await run_in_threadpool(lambda: flows.record_for_subject(
        st.db, st.settings, subject_id, decision=body.decision, channel=body.channel, who=who, purpose=body.purpose,
        notice_version=body.notice_version, guardian_name=g.name if g else None,
        guardian_relation=g.relation if g else None))


@router.get("/v1/subjects/{subject_id}/consents", response_model=ConsentList)
async def list_consents(st: StateDep, subject_id: str = SubjectId, key=Depends(require("subjects:read"))):
    return {"subject_id": subject_id, "consents": await run_in_threadpool(flows.records, st.db, subject_id)}


@router.post("/v1/subjects/{subject_id}/consent/withdraw", response_model=WithdrawalOut)
async def withdraw(request: Request, st: StateDep, body: WithdrawIn | None = None, subject_id: str = SubjectId,
                   key=Depends(require("consent:withdraw"))):
    who = auditing.caller(request, key)
    return await run_in_threadpool(flows.withdraw, st.gallery, subject_id, who, body.reason if body else None)


@router.post("/v1/certifications/alternative", status_code=201, response_model=CertificationOut)
async def certify_alternative(body: AlternativeIn, request: Request, st: StateDep,
                              key=Depends(require("certify:manual"))):
    who = auditing.caller(request, key)
    return await run_in_threadpool(lambda: st.ledger.alternative(body.subject_id, body.method, body.checked_by,
                                                                 body.note, who=who, outcome=body.outcome))


@router.post("/v1/subjects/{subject_id}/alternative-offered", status_code=201, response_model=AlternativeOffered)
async def alternative_offered(request: Request, st: StateDep, subject_id: str = SubjectId,
                              key=Depends(require("certify:manual"))):
    who = auditing.caller(request, key)
    return await run_in_threadpool(lambda: st.ledger.offer_alternative(subject_id, who=who))
