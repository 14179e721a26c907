"""Pydantic models of the API's JSON bodies and answers (they also make the OpenAPI document),
and the rules on free text and free-form JSON that the models and :mod:`.uploads` share."""
from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from facegate.errors import ERROR_CODES
from facegate.vocab import (AlternativeMethod, ManualOutcome, ConsentChannel, ConsentDecision, GuardianRelation, Purpose,
                            CertMethod, CertOutcome, CertStatus, Decision, Identification, KioskMode, RefusalCause,
                            SignalKind, SubjectStatus)


# ------------------------------------------------------------------ free text
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_MULTILINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def unsafe_char(text: str, multiline: bool = False) -> str | None:
    """The first character free text may not hold, as ``U+XXXX``; None when there is none.

    The rule for every name, free-text field, path and query value of the API:

    - control characters (Unicode category Cc: C0, DEL, C1) are refused: a NUL truncates the
      text in C libraries and is refused by PostgreSQL, and line breaks and escapes forge
      lines in logs and terminals. A *multi-line* field (a note) may hold tab, LF and CR;
    - the bidirectional embedding, override and isolate controls U+202A-U+202E and
      U+2066-U+2069 are refused: they make a name display as another one ("Trojan Source",
      CVE-2021-42574) on the operator's screen and in exported lists. The invisible marks
      LRM/RLM (U+200E/U+200F), which right-to-left names may need, stay allowed;
    - unpaired surrogates (U+D800-U+DFFF, only reachable through JSON ``\\ud800`` escapes) are
      refused: they cannot be stored or answered as UTF-8.
    """
    found = (_UNSAFE_MULTILINE if multiline else _UNSAFE).search(text)
    return f"U+{ord(found.group()):04X}" if found else None


def _plain_text(value: str | None, multiline: bool = False) -> str | None:
    if value is not None and (bad := unsafe_char(value, multiline)):
        raise ValueError(f"contains the control or bidi character {bad}")
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]
"""A one-line free-text field of a JSON body (a reason, a name) under :func:`unsafe_char`."""
NoteText = Annotated[str, AfterValidator(lambda value: _plain_text(value, multiline=True))]
"""A multi-line free-text field (a note): the same rule, tab and line breaks allowed."""


# ------------------------------------------------------------------ free-form JSON (metadata, consent)
FREE_JSON_MAX_BYTES = 16 * 1024
"""The largest ``metadata`` / ``consent`` object, as compact UTF-8 JSON: a subject's reference
data (addresses, case numbers, a consent record) fits in a few hundred bytes; 16 KiB leaves room
and keeps a subject row, and every answer that carries it, small."""
FREE_JSON_MAX_DEPTH = 8
"""Nesting of ``metadata`` / ``consent`` (the object itself is level 1)."""


def bounded_json(value: dict | None) -> dict | None:
    """``metadata`` and ``consent``: at most :data:`FREE_JSON_MAX_DEPTH` levels and
    :data:`FREE_JSON_MAX_BYTES` bytes, finite numbers only, and every key and string under the
    multi-line text rule (:func:`unsafe_char`)."""
    if value is None:
        return value
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > FREE_JSON_MAX_DEPTH:
                raise ValueError(f"nested deeper than {FREE_JSON_MAX_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, str):
            if bad := unsafe_char(item, multiline=True):
                raise ValueError(f"holds the control or bidi character {bad}")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("holds a number that is not finite")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > FREE_JSON_MAX_BYTES:
        raise ValueError(f"is {size} bytes of JSON, over {FREE_JSON_MAX_BYTES}")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubjectFields(Strict):
    """What a subject's create and update share, with the text and free-JSON rules."""

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, value):
        return _plain_text(value)

    @field_validator("metadata", "consent", check_fields=False)
    @classmethod
    def _free_json(cls, value):
        return bounded_json(value)


class SubjectCreate(SubjectFields):
    subject_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$",
                            description="external pension / citizen number")
    name: str | None = Field(default=None, max_length=256, description="no control or bidi override characters")
    status: SubjectStatus = "active"
    metadata: dict[str, Any] | None = Field(default=None, description=f"free-form JSON object: at most "
                                            f"{FREE_JSON_MAX_BYTES} bytes, {FREE_JSON_MAX_DEPTH} levels")
    consent: dict[str, Any] | None = Field(default=None, description="who consented, when, for what purpose "
                                           "(bounded like metadata; free text of old: consent records are "
                                           "POST /v1/subjects/{id}/consents)")
    minor: bool = Field(default=False, description="under 14: a guardian's consent record is needed before "
                        "enrolment or any capture")


class SubjectUpdate(SubjectFields):
    name: str | None = Field(default=None, max_length=256, description="no control or bidi override characters")
    status: SubjectStatus | None = None
    metadata: dict[str, Any] | None = Field(default=None, description=f"free-form JSON object: at most "
                                            f"{FREE_JSON_MAX_BYTES} bytes, {FREE_JSON_MAX_DEPTH} levels")
    consent: dict[str, Any] | None = None
    minor: bool | None = None


class FaceOut(BaseModel):
    face_id: int
    quality: float | None = None
    source: str | None = None
    pack_id: str | None = None
    created_at: str | None = None


class SubjectOut(BaseModel):
    subject_id: str
    name: str | None = None
    status: str
    metadata: dict[str, Any] | None = None
    consent: dict[str, Any] | None = None
    minor: bool = False
    withdrawn_at: str | None = Field(default=None, description="consent withdrawn then: face information erased")
    created_at: str | None = None
    updated_at: str | None = None
    faces: list[FaceOut] = []


class SubjectListed(SubjectOut):
    n_faces: int = 0


class SubjectPage(BaseModel):
    total: int
    limit: int
    offset: int
    subjects: list[SubjectListed]


class EnrolOut(BaseModel):
    subject_id: str
    face_id: int
    quality: dict[str, Any]
    pack_id: str
    duplicate_of: list[dict[str, Any]] = Field(default=[], description="other subjects this face matches "
                                               "(only when enrolled with allow_duplicate)")
    request_id: str | None = None


class VerifyOut(BaseModel):
    match: bool = Field(description="true only when decision is 'match'")
    decision: Decision
    review_reasons: list[str] = Field(default=[], description="why a person must check (manual_review)")
    score: float | None
    threshold: float
    fmr: float
    review_band: float
    quality: dict[str, Any]
    subject_id: str
    face_id: int | None = Field(default=None, description="the best-matching template")
    liveness: dict[str, Any] | None = None
    decision_id: str
    request_id: str | None = None
    pack_id: str


class Candidate(BaseModel):
    subject_id: str
    score: float
    face_id: int | None = None
    status: str | None = None


class IdentifyOut(BaseModel):
    candidates: list[Candidate] = Field(description="subjects at or above the threshold, best first")
    decision: Identification = Field(
        description="match: one subject above the threshold by the required margin over the next")
    subject_id: str | None = Field(default=None, description="the identified subject when decision is match")
    margin: float | None = None
    required_margin: float
    threshold: float
    fmr: float
    quality: dict[str, Any]
    rule: str = Field(default="single", description="the scores decided on: 'fused' (the mean of the pack's embedder's "
                      "and its second opinion's cosines, at the fused table's point) or 'single' (the embedder alone)")
    rule_note: str | None = Field(default=None, description="why 'single' where a second opinion exists (e.g. a "
                                  "shortlisted subject has no second-opinion template yet)")
    decision_id: str
    request_id: str | None = None
    pack_id: str


class CompareOut(BaseModel):
    match: bool
    decision: Decision
    review_reasons: list[str] = []
    score: float
    threshold: float
    fmr: float
    review_band: float
    quality_a: dict[str, Any]
    quality_b: dict[str, Any]
    decision_id: str
    request_id: str | None = None
    pack_id: str


class AuditEntry(BaseModel):
    seq: int
    ts: str
    actor: str
    key_id: str | None = None
    operation: str
    subject_id: str | None = None
    outcome: str
    scores: dict[str, Any] | None = None
    request_id: str | None = None
    client_id: str | None = None
    detail: dict[str, Any] | None = None
    hash: str


class KioskReviewOut(BaseModel):
    review_case_id: int
    status: Literal["pending", "decided", "expired"]
    action: Literal["wait", "proceed", "go_to_counter"] = Field(
        description="wait: ask again; proceed: the decision below stands; go_to_counter: nobody took the case in "
                    "time (FACEGATE_KIOSK_REVIEW_WAIT_S): send the person to a counter")
    decision: Literal["identified", "none"] | None = Field(
        default=None, description="decided: a person named one of the candidates (identified) or none of them")
    subject_id: str | None = Field(default=None, description="identified: the subject a person named")
    decided_by_role: str | None = Field(default=None, description="the decider's console role (never their name)")
    decided_at: str | None = None
    created_at: str
    wait_until: str | None = None
    waited_s: float = Field(description="seconds from the case's opening to its decision (or to now)")


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_after_seq: int | None = None


class KioskOut(BaseModel):
    match: bool = Field(description="true only when decision is 'match'")
    decision: Decision
    review_reasons: list[str] = []
    score: float | None = Field(description="the live face against the document, the subject or the best candidate")
    threshold: float
    fmr: float
    review_band: float
    subject_id: str | None = Field(default=None, description="the identified subject, only with a match")
    operating_point: dict[str, Any] = Field(description="table, threshold and fmr of the point used")
    document_quality: dict[str, Any] | None = Field(default=None, description="mode document")
    candidates: list[Candidate] | None = Field(default=None, description="mode search")
    margin: float | None = None
    required_margin: float | None = None
    rule: str | None = Field(default=None, description="mode search: 'fused' or 'single' (as /v1/identify)")
    rule_note: str | None = None
    review_case_id: int | None = Field(default=None, description="mode search: the case opened for a person to "
                                       "decide; wait for it with GET /v1/kiosk/reviews/{review_case_id}?wait=S")
    review_wait_until: str | None = Field(default=None, description="when the case ends `expired` if nobody took it")
    mode: KioskMode
    kiosk_id: str
    liveness: dict[str, Any] | None = None
    latency_ms: float
    decision_id: str
    request_id: str | None = None
    pack_id: str


class CertificationOut(BaseModel):
    certification_id: int
    subject_id: str
    period: str
    outcome: CertOutcome
    method: CertMethod
    alternative: AlternativeMethod | None = Field(default=None, description="the way without a face used")
    checked_by: str | None = None
    valid_until: str | None = Field(description="the certification holds until then (outcome certified)")
    score: float | None = None
    threshold: float | None = None
    fmr: float | None = None
    reasons: list[str] = []
    fraud_signals: list[SignalKind] = []
    liveness_session_id: str | None = None
    created_at: str
    operator: str | None = Field(default=None, description="the console operator of a manual decision")
    review_case_id: int | None = Field(default=None, description="the review case opened for a person to decide")


class CertificationStatusItem(BaseModel):
    subject_id: str
    name: str | None = None
    status: CertStatus
    subject_status: SubjectStatus
    certified_at: str | None = None
    certified_by: CertMethod | AlternativeMethod | None = None
    valid_until: str | None = None
    attempts: int
    last_outcome: CertOutcome | None = None
    last_attempt_at: str | None = None


class CertificationStatuses(BaseModel):
    period: str
    period_start: str
    period_end: str
    as_of: str
    counts: dict[CertStatus, int]
    certified_by: dict[str, int] = Field(default={}, description="certified subjects by method: face, manual and "
                                         "each way without a face")
    items: list[CertificationStatusItem]
    limit: int
    offset: int


class CertificationAttempt(BaseModel):
    certification_id: int
    period: str
    outcome: CertOutcome
    method: CertMethod
    valid_until: str | None = None
    score: float | None = None
    reasons: list[str] = []
    note: str | None = None
    operator: str | None = None
    created_at: str


class SubjectCertifications(BaseModel):
    subject_id: str
    attempts: list[CertificationAttempt]


class FraudSignal(BaseModel):
    id: int
    kind: SignalKind
    subject_id: str
    other_subject_id: str | None = None
    certification_id: int | None = None
    period: str | None = None
    detail: dict[str, Any] = {}
    created_at: str


class FraudSignals(BaseModel):
    signals: list[FraudSignal]


class LivenessSession(BaseModel):
    session_id: str
    challenge: list[str] = Field(description="the actions to perform, in this order")
    nonce: str = Field(description="sent back with every capture upload")
    expires_at: str = Field(description="the capture must be complete by then")
    status: str
    subject_id: str | None = None
    purpose: str | None = None
    frames_received: int
    valid_until: str | None = Field(default=None, description="a passed session may be used once until then")
    passive: str | None = Field(default=None, description="the passive PAD models in use, or 'passive: unavailable'")
    capture_token: str | None = Field(default=None, description="only when the session is opened: the credential "
                                      "the capture page or app uses for this session's capture and status calls "
                                      "(Authorization: Bearer), valid until expires_at; shown once")
    result: dict[str, Any] | None = Field(default=None, description="the verdict, once judged")
    consent: dict[str, Any] | None = Field(default=None, description="status read: whether consent is asked, the "
                                           "current notice (zh-CN, en) and this session's answer")


class CaptureProgress(BaseModel):
    session_id: str
    frames_received: int
    status: str


class LivenessResult(BaseModel):
    """The verdict on a capture (the judge's figures are documented in docs/liveness.md)."""
    model_config = ConfigDict(extra="allow")
    session_id: str
    live: bool
    score: float
    challenge: list[str]
    reasons: list[str] = Field(description="machine-readable reasons when not live")
    actions: list[dict[str, Any]] = []
    passive: dict[str, Any] = {}
    capture: dict[str, Any] = {}
    identity: dict[str, Any] | None = None
    timing_ms: dict[str, float] = {}
    valid_until: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``); an error's extra fields
    (``retry_after``, ``field``, ``errors``, ...) are further members."""
    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    cause: RefusalCause | None = Field(
        None, description="why a photo was refused, in terms the person in front of the camera can act on: "
        "`multiple_faces` -> `second_face`, `face_too_small` -> `too_far`, `low_quality` -> the quality's weakest "
        "aspect (`too_bright`, `too_dark`, `blurred`, `turned`, `too_far`); absent for other codes")


PROBLEM_STATUSES: tuple[int, ...] = tuple(sorted({status for status, _ in ERROR_CODES.values()
                                                  if 400 <= status < 500 and status != 405} | {503}))
"""The error statuses every /v1 operation declares (``application/problem+json``,
:class:`Problem`): each 4xx an error code can answer, and 503. Every operation declares all of
them, since authentication (401, 403), rate limits (429), body limits (413) and capacity (503)
apply to each; 405 belongs to a path rather than an operation, and a 500 is never part of the
contract."""


# ---------------------------------------------------------------- compliance (docs/compliance.md)
class Guardian(Strict):
    name: PlainText = Field(min_length=1, max_length=128)
    relation: GuardianRelation


class ConsentIn(Strict):
    purpose: Purpose | None = Field(default=None, description="default: FACEGATE_DEFAULT_PURPOSE")
    notice_version: int | None = Field(default=None, ge=1, le=2**31, description="the version the person was "
                                       "shown (default: the current one); an older one is refused")
    channel: ConsentChannel = "counter"
    decision: ConsentDecision = "given"
    guardian: Guardian | None = Field(default=None, description="for a subject under 14: who consented for them")


class ConsentOut(BaseModel):
    consent_id: int
    subject_id: str | None = None
    liveness_session_id: str | None = None
    purpose: Purpose
    notice_version: int
    channel: ConsentChannel
    decision: ConsentDecision
    recorded_by: str
    guardian: dict[str, Any] | None = None
    recorded_at: str
    withdrawn_at: str | None = None


class ConsentList(BaseModel):
    subject_id: str
    consents: list[ConsentOut]


class WithdrawIn(Strict):
    reason: PlainText | None = Field(default=None, max_length=500)


class WithdrawalOut(BaseModel):
    subject_id: str
    records_withdrawn: int
    erased: dict[str, int]
    withdrawn_at: str


class CaptureConsentIn(Strict):
    decision: ConsentDecision
    notice_version: int = Field(ge=1, le=2**31)


class CaptureConsentOut(BaseModel):
    consent: ConsentOut
    alternative: dict[str, str] | None = Field(default=None, description="declined: the way without a face, "
                                               "in each language")


class NoticeOut(BaseModel):
    version: int
    texts: dict[str, dict[str, str]]
    sha256: str
    published_by: str
    published_at: str


class AlternativeIn(Strict):
    subject_id: str = Field(min_length=1, max_length=128)
    method: AlternativeMethod
    checked_by: PlainText = Field(min_length=1, max_length=128, description="who checked the person")
    note: NoteText = Field(min_length=1, max_length=2000, description="how the person was checked")
    outcome: ManualOutcome = "certified"


class AlternativeOffered(BaseModel):
    subject_id: str
    period: str
    offered_at: str
