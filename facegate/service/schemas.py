"""Pydantic models of the API's JSON bodies and answers (they also make the OpenAPI at /docs)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SubjectStatus = Literal["active", "suspended", "deceased"]
Decision = Literal["match", "no_match", "manual_review"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubjectCreate(Strict):
    subject_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$",
                            description="external pension / citizen number")
    name: str | None = Field(default=None, max_length=256)
    status: SubjectStatus = "active"
    metadata: dict[str, Any] | None = None
    consent: dict[str, Any] | None = Field(default=None, description="who consented, when, for what purpose")


class SubjectUpdate(Strict):
    name: str | None = Field(default=None, max_length=256)
    status: SubjectStatus | None = None
    metadata: dict[str, Any] | None = None
    consent: dict[str, Any] | None = None


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
    decision: Literal["match", "ambiguous", "no_match"] = Field(
        description="match: one subject above the threshold by the required margin over the next")
    subject_id: str | None = Field(default=None, description="the identified subject when decision is match")
    margin: float | None = None
    required_margin: float
    threshold: float
    fmr: float
    quality: dict[str, Any]
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


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_after_seq: int | None = None


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
