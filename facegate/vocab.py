"""Closed vocabularies, each defined once.

The database's CHECK constraints, the API's Pydantic models, the CLI's ``choices=`` and the
configuration checks all read these tuples; adding a value here is the first step of adding a
status, a role, a decision or a signal (a CHECK constraint also needs a migration).
"""
from __future__ import annotations

from typing import Literal, get_args

# Who holds an API key, and so what it may do (the permission table is service.auth.PERMISSIONS).
Role = Literal["admin", "operator", "kiosk", "app"]
ROLES: tuple[str, ...] = get_args(Role)

# An enrolled person's standing: only ``active`` subjects can be matched automatically.
SubjectStatus = Literal["active", "suspended", "deceased"]
SUBJECT_STATUSES: tuple[str, ...] = get_args(SubjectStatus)

# The answer of a 1:1 decision (verify, compare, kiosk): a person checks ``manual_review``.
Decision = Literal["match", "no_match", "manual_review"]
DECISIONS: tuple[str, ...] = get_args(Decision)

# The answer of a 1:N search before review rules: ``ambiguous`` = two subjects too close.
Identification = Literal["match", "ambiguous", "no_match"]
IDENTIFICATIONS: tuple[str, ...] = get_args(Identification)

# How a kiosk identifies the person: against the ID card's chip photo, an enrolled subject, or the gallery.
KioskMode = Literal["document", "subject", "search"]
KIOSK_MODES: tuple[str, ...] = get_args(KioskMode)

# A pension-certification attempt's outcome, and a subject's standing in a period.
CertOutcome = Literal["certified", "failed", "manual_review"]
CERT_OUTCOMES: tuple[str, ...] = get_args(CertOutcome)
ManualOutcome = Literal["certified", "failed"]
MANUAL_OUTCOMES: tuple[str, ...] = get_args(ManualOutcome)
CertStatus = Literal["certified", "due", "overdue", "failed", "manual_review", "alternative_offered"]
CERT_STATUSES: tuple[str, ...] = get_args(CertStatus)
CertMethod = Literal["face", "manual"]
CERT_METHODS: tuple[str, ...] = get_args(CertMethod)

# Fraud signals raised by certification attempts.
SignalKind = Literal["shared_face", "repeated_failures", "deceased_subject", "liveness_failed"]
SIGNAL_KINDS: tuple[str, ...] = get_args(SignalKind)

# A liveness session's life: capture, judging, verdict, one-time use.
LivenessStatus = Literal["pending", "judging", "passed", "failed", "consumed"]
LIVENESS_STATUSES: tuple[str, ...] = get_args(LivenessStatus)

# A registered kiosk's standing.
KioskStatus = Literal["active", "disabled"]
KIOSK_STATUSES: tuple[str, ...] = get_args(KioskStatus)

# Kinds of the 1:N vector index (``auto`` lets the gallery choose by size).
IndexKind = Literal["flat", "ivf_sq", "ivf_pq", "ivf_pq_refine", "hnsw_sq"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)

# Which face of an image a call uses.
FacePolicy = Literal["largest", "central", "single", "all"]
FACE_POLICIES: tuple[str, ...] = get_args(FacePolicy)

# Why a photo was refused, in words a person in front of the camera can act on (the refusal's
# ``cause``): no_face has none; face_too_small is too_far; multiple_faces is second_face;
# low_quality names the quality score's weakest aspect.
RefusalCause = Literal["too_bright", "too_dark", "blurred", "turned", "too_far", "second_face"]
REFUSAL_CAUSES: tuple[str, ...] = get_args(RefusalCause)

# People who work in the operator console (/console/), not API keys: ``reviewer`` decides reviews
# and sees evidence; ``supervisor`` also changes subjects' status, erases, reads fraud signals
# and the audit trail; ``auditor`` reads the audit trail and reports, and never sees an image.
OperatorRole = Literal["reviewer", "supervisor", "auditor"]
OPERATOR_ROLES: tuple[str, ...] = get_args(OperatorRole)
OperatorStatus = Literal["active", "disabled"]
OPERATOR_STATUSES: tuple[str, ...] = get_args(OperatorStatus)
# A console session's stage: the password was right (``mfa``: the TOTP code is next; ``enrol``:
# the operator has no second factor yet and enrols one now), or both factors were (``active``).
ConsoleStage = Literal["mfa", "enrol", "active"]
CONSOLE_STAGES: tuple[str, ...] = get_args(ConsoleStage)

# A decision that went to a person: which use case it came from, whether a person decided it, and
# what the evidence rows hold (liveness frames, the still sent with the capture).
ReviewWorkflow = Literal["certification", "kiosk"]
REVIEW_WORKFLOWS: tuple[str, ...] = get_args(ReviewWorkflow)
# ``expired``: a kiosk case nobody took before the person at the kiosk stopped waiting (0010).
ReviewStatus = Literal["pending", "decided", "expired"]
REVIEW_STATUSES: tuple[str, ...] = get_args(ReviewStatus)
EvidenceKind = Literal["frame", "still"]
EVIDENCE_KINDS: tuple[str, ...] = get_args(EvidenceKind)

# Certification periods.
PeriodKind = Literal["year", "half", "quarter", "month"]
PERIOD_KINDS: tuple[str, ...] = get_args(PeriodKind)


# -------------------------------------------------------------- compliance (issue 24, docs/compliance.md)
# What face information is processed for (a consent names one; the filing count is by purpose).
Purpose = Literal["pension_certification", "identity_verification", "kiosk_service"]
PURPOSES: tuple[str, ...] = get_args(Purpose)

# Where a consent was given or recorded.
ConsentChannel = Literal["capture_page", "counter", "cli", "api"]
CONSENT_CHANNELS: tuple[str, ...] = get_args(ConsentChannel)

# What the person answered (a declined consent is a record too: the page told them the way without a face).
ConsentDecision = Literal["given", "declined"]
CONSENT_DECISIONS: tuple[str, ...] = get_args(ConsentDecision)

# Who consents for a person under 14 (Art. on minors): the guardian's relation to the child.
GuardianRelation = Literal["parent", "legal_guardian"]
GUARDIAN_RELATIONS: tuple[str, ...] = get_args(GuardianRelation)

# The ways without a face (不得作为唯一方式): how a person is certified without face recognition.
AlternativeMethod = Literal["counter", "home_visit", "video_call", "document"]
ALTERNATIVE_METHODS: tuple[str, ...] = get_args(AlternativeMethod)

# Classes of data under a retention rule (storage/retention.py holds the registry: one rule per class).
DataClass = Literal["liveness_frames", "liveness_sessions", "withdrawn_face_data", "deceased_face_data",
                    "certification_captures", "decision_evidence", "operator_sessions", "audit_rows"]
DATA_CLASSES: tuple[str, ...] = get_args(DataClass)

# The fields of a notice, each in zh-CN and en (notices publish refuses a file without any of them).
NOTICE_FIELDS: tuple[str, ...] = ("processor_name", "processor_contact", "purpose", "method", "retention", "rights",
                                  "alternative")
NOTICE_LANGUAGES: tuple[str, ...] = ("zh-CN", "en")


def check_sql(column: str, values: tuple[str, ...]) -> str:
    """The SQL of a CHECK constraint that keeps ``column`` inside ``values``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"
