"""The operator console's API (``/console/api/``), used by the console page (``/console/``).

Operators, not API keys: a session cookie (``fg_console``: HttpOnly, Secure, SameSite=Strict,
path ``/console``) names a session in the database (:mod:`facegate.workflows.review.operators`);
every state-changing call also carries the session's CSRF token in ``X-CSRF-Token``. Roles:

- ``reviewer``: the review queue, cases with their images, claims and decisions;
- ``supervisor``: the same, and subjects (status, erasure), fraud signals, reports, the audit trail;
- ``auditor``: read-only: the queue and cases without images, reports, fraud signals, the audit trail.

Images (reference photo, evidence frames) are answered ``Cache-Control: no-store`` and each
view is audited (``evidence.view``). Refusals (401/403) are audited as ``console.refused`` with
the operator's name when the session is known (at most 30 a minute per source address).
Decisions go through :class:`facegate.workflows.review.desk.ReviewDesk`, which records them
through the certification ledger's manual path.
"""
from __future__ import annotations

import csv
import io

import httpx
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from facegate.clock import parse_instant
from facegate.errors import FacegateError
from facegate.service import auditing, console_sso
from facegate.service.deps import ServiceState, state
from facegate.storage import ratelimits
from facegate.storage.audit import Actor
from facegate.vocab import MANUAL_OUTCOMES, REVIEW_STATUSES, REVIEW_WORKFLOWS, SIGNAL_KINDS, SUBJECT_STATUSES
from facegate.service.schemas import NoteText, PlainText, WithdrawalOut
from facegate.workflows.consent import consent as consent_flows
from facegate.workflows.review import reports
from facegate.workflows.review.operators import DEVICE_TTL_S, ConsoleSession, SignedIn

router = APIRouter(prefix="/console/api", tags=["console"])

COOKIE = "fg_console"
COOKIE_PATH = "/console"
DEVICE_COOKIE = "fg_device"
DEVICE_COOKIE_PATH = "/console/api"
CSRF_HEADER = "x-csrf-token"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

CAN: dict[str, frozenset[str]] = {
    "reviewer": frozenset({"review:read", "review:decide", "images"}),
    "supervisor": frozenset({"review:read", "review:decide", "images", "subjects", "signals", "reports", "audit"}),
    "auditor": frozenset({"review:read", "signals", "reports", "audit"}),
}
# Verifying the audit chain walks every row: at most this many walks a minute for the whole
# service (one bucket shared by every operator and replica), whoever asks.
CHAIN_VERIFICATIONS_PER_MINUTE = 2
CaseId = Annotated[int, Path(ge=1, le=2**31 - 1)]
SubjectId = Annotated[str, Path(min_length=1, max_length=128)]


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _refused(st: ServiceState, request: Request, exc: FacegateError, operator: str | None) -> None:
    who = Actor(f"operator:{operator}" if operator else "anonymous", None, "console",
                getattr(request.state, "request_id", None))
    auditing.write_capped(st, _source(request), who, "console.refused", exc.code,
                          {"route": request.url.path[:200], "method": request.method, "source": _source(request),
                           "reason": exc.message[:200]})


def signed_in(permission: str | None = None, *, stages: tuple[str, ...] = ("active",), csrf: bool = False):
    """Dependency: the request's console session, at one of ``stages``, whose role may
    ``permission``, with the session's CSRF token when ``csrf`` (state-changing calls)."""

    async def dependency(request: Request, st: ServiceState = Depends(state)) -> ConsoleSession:
        session = None
        try:
            session = await run_in_threadpool(st.operators.session, request.cookies.get(COOKIE))
            if csrf:
                st.operators.check_csrf(session, request.headers.get(CSRF_HEADER))
            if session.stage not in stages:
                raise FacegateError("forbidden", "finish signing in (second factor) first", stage=session.stage)
            if permission and permission not in CAN.get(session.role, ()):
                raise FacegateError("forbidden", f"role {session.role!r} may not do this", role=session.role,
                                    permission=permission)
            request.state.console = session
            return session
        except FacegateError as exc:
            # a page opened without any session asks /me first: that is not a refused call
            first_look = COOKIE not in request.cookies and request.url.path.endswith("/me")
            if exc.status in (401, 403) and not first_look:
                await run_in_threadpool(_refused, st, request, exc, session.operator if session else None)
            raise

    return dependency


def _who(request: Request, session: ConsoleSession) -> Actor:
    return Actor(f"operator:{session.operator}", None, "console", getattr(request.state, "request_id", None))


def _set_cookie(response: Response, st: ServiceState, secret: str) -> None:
    response.set_cookie(COOKIE, secret, httponly=True, secure=st.settings.console_secure_cookie, samesite="strict",
                        path=COOKIE_PATH, max_age=int(st.settings.console_absolute_h * 3600))


def _signed_in(response: Response, st: ServiceState, done: SignedIn) -> None:
    """A complete sign-in's cookies: the new session's, and the device cookie that lets this
    browser sign in as this operator however many failures others cause under the name."""
    _set_cookie(response, st, done.secret)
    response.set_cookie(DEVICE_COOKIE, done.device, httponly=True, secure=st.settings.console_secure_cookie,
                        samesite="strict", path=DEVICE_COOKIE_PATH, max_age=int(DEVICE_TTL_S))


# ---------------------------------------------------------------------------- sign-in
class SignIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class Code(BaseModel):
    code: str = Field(min_length=1, max_length=16)


class SessionOut(BaseModel):
    operator: str
    role: str
    stage: str
    csrf: str
    created_at: str | None = None
    expires_at: str | None = None
    via: str = "password"
    can: list[str] = []


def _session_out(s: ConsoleSession) -> dict:
    return s.public() | {"can": sorted(CAN.get(s.role, ()))}


@router.post("/sign-in", response_model=SessionOut)
async def sign_in(body: SignIn, request: Request, response: Response, st: ServiceState = Depends(state)):
    secret, session = await run_in_threadpool(st.operators.sign_in, body.name, body.password, _source(request),
                                              request.cookies.get(DEVICE_COOKIE))
    _set_cookie(response, st, secret)
    response.headers.update(NO_STORE)
    return _session_out(session)


class EnrolmentOut(BaseModel):
    secret: str
    uri: str
    qr_svg: str


@router.get("/enrolment", response_model=EnrolmentOut)
async def enrolment(response: Response, st: ServiceState = Depends(state),
                    session: ConsoleSession = Depends(signed_in(stages=("enrol",)))):
    response.headers.update(NO_STORE)
    return await run_in_threadpool(st.operators.enrolment, session)


@router.post("/mfa", response_model=SessionOut)
async def second_factor(body: Code, request: Request, response: Response, st: ServiceState = Depends(state),
                        session: ConsoleSession = Depends(signed_in(stages=("mfa", "enrol"), csrf=True))):
    done = await run_in_threadpool(st.operators.verify_code, session, body.code, _source(request),
                                   request.cookies.get(DEVICE_COOKIE))
    _signed_in(response, st, done)
    return _session_out(done.session)


@router.get("/me", response_model=SessionOut)
async def me(response: Response, session: ConsoleSession = Depends(signed_in(stages=("mfa", "enrol", "active")))):
    response.headers.update(NO_STORE)
    return _session_out(session)


@router.post("/sign-out", status_code=204)
async def sign_out(request: Request, st: ServiceState = Depends(state),
                   session: ConsoleSession = Depends(signed_in(stages=("mfa", "enrol", "active"), csrf=True))):
    await run_in_threadpool(st.operators.sign_out, session, _source(request))
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=st.settings.console_secure_cookie, httponly=True,
                           samesite="strict")
    return response


# ---------------------------------------------------------------------------- single sign-on
def _redirect_uri(request: Request, st: ServiceState) -> str:
    return st.settings.console_oidc_redirect_uri or str(request.base_url).rstrip("/") + "/console/api/oidc/callback"


class SsoOut(BaseModel):
    enabled: bool


@router.get("/oidc", response_model=SsoOut)
async def sso_status(st: ServiceState = Depends(state)):
    return {"enabled": console_sso.enabled(st.settings)}


@router.get("/oidc/start", status_code=303, response_class=RedirectResponse,
            responses={303: {"description": "to the identity provider"}})
async def sso_start(request: Request, st: ServiceState = Depends(state)):
    if not console_sso.enabled(st.settings):
        raise FacegateError("not_found", "single sign-on is not configured")
    try:
        url, sealed = await run_in_threadpool(console_sso.start, st.settings, st.gallery.store.keys,
                                              _redirect_uri(request, st))
    except httpx.HTTPError as exc:
        raise FacegateError("not_ready", f"the identity provider cannot be reached ({type(exc).__name__})",
                            retry_after=5) from None
    response = RedirectResponse(url, status_code=303, headers=NO_STORE)
    response.set_cookie(console_sso.LOGIN_COOKIE, sealed, httponly=True, secure=st.settings.console_secure_cookie,
                        samesite="lax", path="/console/api/oidc", max_age=console_sso.LOGIN_TTL_S)
    return response


@router.get("/oidc/callback", status_code=303, response_class=RedirectResponse,
            responses={303: {"description": "to the console, signed in (or to its sign-in page)"}})
async def sso_callback(request: Request, st: ServiceState = Depends(state), code: str | None = Query(None, max_length=2048),
                       state_: str | None = Query(None, alias="state", max_length=512),
                       error: str | None = Query(None, max_length=256)):
    if not console_sso.enabled(st.settings):
        raise FacegateError("not_found", "single sign-on is not configured")
    target = "/console/#/queue"
    try:
        if error:
            raise FacegateError("sign_in_failed", f"the identity provider answered {error[:64]}")
        issuer, subject, name = await run_in_threadpool(console_sso.finish, st.settings, st.gallery.store.keys,
                                                        request.cookies.get(console_sso.LOGIN_COOKIE), code, state_)
        done = await run_in_threadpool(st.operators.open_sso, issuer, subject, name, _source(request),
                                       request.cookies.get(DEVICE_COOKIE))
    except Exception as exc:          # noqa: BLE001 - every failure is audited (capped) and sent back to the sign-in page
        code_ = exc.code if isinstance(exc, FacegateError) else "sign_in_failed"
        reason = exc.message if isinstance(exc, FacegateError) else type(exc).__name__
        await run_in_threadpool(auditing.write_capped, st, _source(request),
                                Actor("anonymous", None, "console", getattr(request.state, "request_id", None)),
                                "console.sign_in", code_, {"via": "oidc", "source": _source(request),
                                                           "reason": reason[:200]})
        response = RedirectResponse(f"/console/?sso={code_}", status_code=303, headers=NO_STORE)
    else:
        response = RedirectResponse(target, status_code=303, headers=NO_STORE)
        _signed_in(response, st, done)
    response.delete_cookie(console_sso.LOGIN_COOKIE, path="/console/api/oidc")
    return response


# ---------------------------------------------------------------------------- review
@router.get("/queue")
async def queue(st: ServiceState = Depends(state), session: ConsoleSession = Depends(signed_in("review:read")),
                status: Literal[REVIEW_STATUSES] = "pending",                       # type: ignore[valid-type]
                workflow: Literal[REVIEW_WORKFLOWS] | None = None,                 # type: ignore[valid-type]
                reason: str | None = Query(None, max_length=64), period: str | None = Query(None, max_length=16),
                kiosk_id: str | None = Query(None, max_length=64),
                subject_id: str | None = Query(None, max_length=128),
                after: int | None = Query(None, ge=0, le=2**31 - 1), limit: int = Query(50, ge=1, le=100)):
    return await run_in_threadpool(lambda: st.review.queue(status=status, workflow=workflow, reason=reason,
                                                           period=period, kiosk_id=kiosk_id, subject_id=subject_id,
                                                           after=after, limit=limit))


@router.get("/cases/{case_id}")
async def case(case_id: CaseId, st: ServiceState = Depends(state),
               session: ConsoleSession = Depends(signed_in("review:read"))):
    out = await run_in_threadpool(st.review.case, case_id)
    out["images_allowed"] = "images" in CAN.get(session.role, ())
    out["operating_point"] = {"threshold": (out.get("scores") or {}).get("threshold"),
                              "fmr": (out.get("scores") or {}).get("fmr")}
    return out


@router.post("/cases/{case_id}/claim")
async def claim(case_id: CaseId, request: Request, st: ServiceState = Depends(state),
                session: ConsoleSession = Depends(signed_in("review:decide", csrf=True))):
    return await run_in_threadpool(st.review.claim, case_id, session.operator, _who(request, session))


class DecisionIn(BaseModel):
    decision: Literal[MANUAL_OUTCOMES]                                              # type: ignore[valid-type]
    note: NoteText = Field(min_length=1, max_length=2000)


@router.post("/cases/{case_id}/decision")
async def decide(case_id: CaseId, body: DecisionIn, request: Request, st: ServiceState = Depends(state),
                 session: ConsoleSession = Depends(signed_in("review:decide", csrf=True))):
    return await run_in_threadpool(lambda: st.review.decide(case_id, body.decision, body.note,
                                                            operator=session.operator, who=_who(request, session)))


class IdentificationIn(BaseModel):
    subject_id: str | None = Field(default=None, min_length=1, max_length=128,
                                   description="the candidate who is the person; null: none of them")
    note: NoteText = Field(min_length=1, max_length=2000)


@router.post("/cases/{case_id}/identification")
async def identification(case_id: CaseId, body: IdentificationIn, request: Request, st: ServiceState = Depends(state),
                         session: ConsoleSession = Depends(signed_in("review:decide", csrf=True))):
    out = await run_in_threadpool(lambda: st.review.identify(case_id, body.subject_id, body.note,
                                                             operator=session.operator, who=_who(request, session)))
    st.review_waits.wake(case_id)
    return out


def _image(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers=NO_STORE | {"X-Content-Type-Options": "nosniff",
                                                                      "Content-Disposition": "inline"})


@router.get("/cases/{case_id}/reference", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the reference photo (audited view)"}})
async def reference(case_id: CaseId, request: Request, st: ServiceState = Depends(state),
                    session: ConsoleSession = Depends(signed_in("images"))):
    return _image(await run_in_threadpool(st.review.reference_image, case_id, _who(request, session)))


@router.get("/cases/{case_id}/evidence/{kind}/{seq}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "an evidence frame (audited view)"}})
async def evidence(case_id: CaseId, kind: Literal["frame", "still"], request: Request,
                   seq: int = Path(ge=0, le=16), st: ServiceState = Depends(state),
                   session: ConsoleSession = Depends(signed_in("images"))):
    return _image(await run_in_threadpool(st.review.evidence_image, case_id, kind, seq, _who(request, session)))


@router.get("/cases/{case_id}/candidates/{n}/reference", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "a kiosk candidate's reference photo"}})
async def candidate_reference(case_id: CaseId, request: Request, n: int = Path(ge=0, le=9),
                              st: ServiceState = Depends(state), session: ConsoleSession = Depends(signed_in("images"))):
    return _image(await run_in_threadpool(st.review.candidate_reference, case_id, n, _who(request, session)))


# ---------------------------------------------------------------------------- other screens
@router.get("/fraud-signals")
async def fraud_signals(st: ServiceState = Depends(state), session: ConsoleSession = Depends(signed_in("signals")),
                        kind: Literal[SIGNAL_KINDS] | None = None,                  # type: ignore[valid-type]
                        subject_id: str | None = Query(None, max_length=128),
                        period: str | None = Query(None, max_length=16),
                        limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0, le=100_000)):
    signals = await run_in_threadpool(st.ledger.signals, kind, subject_id, period, limit, offset)
    cases = await run_in_threadpool(st.review.cases_of_certifications, [x["certification_id"] for x in signals])
    return {"signals": [x | {"case_id": cases.get(x["certification_id"])} for x in signals]}


@router.get("/certifications")
async def certifications(st: ServiceState = Depends(state), session: ConsoleSession = Depends(signed_in("reports")),
                         period: str | None = Query(None, max_length=16), status: str | None = Query(None, max_length=16),
                         format: Literal["json", "csv"] = "json",
                         limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0, le=10_000_000)):
    try:
        out = await run_in_threadpool(st.ledger.statuses, period, status, None, limit, offset)
    except ValueError as exc:
        raise FacegateError("invalid_request", str(exc), field="period")
    if format == "csv":
        buf = io.StringIO()
        cols = ["subject_id", "name", "status", "certified_at", "certified_by", "valid_until", "attempts",
                "last_outcome", "last_attempt_at"]
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for item in out["items"]:
            w.writerow({k: reports.csv_safe(item.get(k)) for k in cols})
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers=NO_STORE | {"Content-Disposition": f'attachment; filename="certifications-{out["period"]}.csv"'})
    return out


@router.get("/kiosks")
async def kiosk_days(st: ServiceState = Depends(state), session: ConsoleSession = Depends(signed_in("reports")),
                     days: int = Query(14, ge=1, le=reports.MAX_DAYS)):
    return await run_in_threadpool(reports.kiosks_per_day, st.db, days)


@router.get("/subjects/{subject_id}")
async def subject(subject_id: SubjectId, st: ServiceState = Depends(state),
                  session: ConsoleSession = Depends(signed_in("subjects"))):
    out = await run_in_threadpool(reports.subject_record, st.db, subject_id)
    out["certifications"] = await run_in_threadpool(st.ledger.attempts, subject_id, 20)
    return out


class StatusIn(BaseModel):
    status: Literal[SUBJECT_STATUSES]                                               # type: ignore[valid-type]
    reason: PlainText = Field(min_length=1, max_length=500)


@router.post("/subjects/{subject_id}/status")
async def subject_status(subject_id: SubjectId, body: StatusIn, request: Request, st: ServiceState = Depends(state),
                         session: ConsoleSession = Depends(signed_in("subjects", csrf=True))):
    return await run_in_threadpool(lambda: st.gallery.store.update_subject(
        subject_id, status=body.status, actor=f"operator:{session.operator}", reason=body.reason))


class ConfirmedIn(BaseModel):
    """What erases a subject's face information: the subject id typed again, and why."""
    confirm: str = Field(min_length=1, max_length=128, description="the subject id typed again")
    reason: PlainText = Field(min_length=1, max_length=500)

    def confirmed(self, subject_id: str, what: str) -> None:
        if self.confirm != subject_id:
            raise FacegateError("invalid_request", f"type the subject id again to confirm the {what}", field="confirm")


class EraseIn(ConfirmedIn):
    pass


@router.post("/subjects/{subject_id}/erase")
async def erase(subject_id: SubjectId, body: EraseIn, request: Request, st: ServiceState = Depends(state),
                session: ConsoleSession = Depends(signed_in("subjects", csrf=True))):
    body.confirmed(subject_id, "erasure")
    return await run_in_threadpool(lambda: st.gallery.erase(subject_id, actor=f"operator:{session.operator}",
                                                            reason=body.reason))


class ConsoleWithdrawIn(ConfirmedIn):
    reason: PlainText = Field(min_length=1, max_length=500,
                              description="how the person withdrew (a letter, at the counter)")


@router.post("/subjects/{subject_id}/withdraw", response_model=WithdrawalOut)
async def withdraw(subject_id: SubjectId, body: ConsoleWithdrawIn, request: Request, st: ServiceState = Depends(state),
                   session: ConsoleSession = Depends(signed_in("subjects", csrf=True))):
    """The person withdrew consent: their face information is erased, the subject row, its
    consent and audit rows stay, and later decisions answer ``consent_withdrawn``."""
    body.confirmed(subject_id, "withdrawal")
    return await run_in_threadpool(consent_flows.withdraw, st.gallery, subject_id, _who(request, session),
                                   body.reason)


@router.get("/audit")
async def audit_search(st: ServiceState = Depends(state), session: ConsoleSession = Depends(signed_in("audit")),
                       subject_id: str | None = Query(None, max_length=128),
                       operator: str | None = Query(None, max_length=64),
                       operation: str | None = Query(None, max_length=64),
                       since: str | None = Query(None, max_length=40), until: str | None = Query(None, max_length=40),
                       after_seq: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=200),
                       verify: bool = False):
    """Audit rows; with ``verify`` also the whole chain walked (:func:`reports.chain_status`), at
    most :data:`CHAIN_VERIFICATIONS_PER_MINUTE` times a minute (``rate_limited`` past it)."""
    out = await run_in_threadpool(lambda: reports.audit_search(
        st.db, subject_id=subject_id, operator=operator, operation=operation, since=parse_instant(since, "since"),
        until=parse_instant(until, "until"), after_seq=after_seq, limit=limit))
    if verify:
        taken = await run_in_threadpool(ratelimits.take, st.db, "console:audit-verify", CHAIN_VERIFICATIONS_PER_MINUTE)
        if not taken.allowed:
            raise FacegateError("rate_limited", "the audit chain was verified moments ago; try again shortly",
                                retry_after=max(1, int(taken.retry_after_s + 0.999)))
        out["chain"] = await run_in_threadpool(reports.chain_status, st.db)
    return out
