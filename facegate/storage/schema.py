"""The database schema: one SQLAlchemy Core ``MetaData`` for SQLite and PostgreSQL.

Migrations live in ``facegate/storage/migrations`` (Alembic) and are applied by
:func:`facegate.storage.db.open_database`; change a table here and add a revision there.

Tables:

- ``subjects``: who is enrolled (external ``subject_id``, status, consent).
- ``templates``: face templates, AES-GCM encrypted (``embedding_enc`` = nonce + ciphertext),
  each tagged with the model pack that made it.
- ``template_family``: the second opinions of a template: embeddings of the same photo by the
  pack's other embedders (SFace), each tagged with its pack and model, encrypted like the template.
- ``change_log``: one monotonic row per template add/remove, written in the template's
  transaction, so index replicas catch up with ``seq > applied``.
- ``audit_log``: append-only hash chain (see :mod:`facegate.storage.audit`).
- ``api_keys``: HTTP API keys (only hashes).
- ``import_items``: per-photo state of ``facegate import``, written in the same transaction as
  the template, so a re-run skips what is done.
- ``store_info``: key/value facts about this store (its random id, the audit archive's head).
- ``notices``, ``consent_records``, ``alternatives_offered``, ``retention_runs``: the 2025
  face-recognition rules (revision 0007, docs/compliance.md).
"""
from __future__ import annotations

import sqlalchemy as sa

from facegate.vocab import (CERT_METHODS, CERT_OUTCOMES, CONSENT_CHANNELS, CONSENT_DECISIONS, CONSOLE_STAGES,
                            EVIDENCE_KINDS, KIOSK_STATUSES, LIVENESS_STATUSES, OPERATOR_ROLES, OPERATOR_STATUSES,
                            PURPOSES, REVIEW_STATUSES, REVIEW_WORKFLOWS, ROLES, SUBJECT_STATUSES, check_sql)

metadata = sa.MetaData()

TS = sa.DateTime(timezone=True)


subjects = sa.Table(
    "subjects", metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject_id", sa.String(128), nullable=False, unique=True),
    sa.Column("name", sa.String(256)),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("metadata", sa.Text),          # JSON text
    sa.Column("consent", sa.Text),           # JSON text: who, when, purpose (free text of old; consent_records rule now)
    sa.Column("minor", sa.Boolean, nullable=False, server_default=sa.false()),   # under 14: a guardian consents (0007)
    sa.Column("status_since", TS),           # when ``status`` last changed (retention of the deceased, 0007)
    sa.Column("withdrawn_at", TS),           # consent withdrawn: face information erased (0007)
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.CheckConstraint(check_sql("status", SUBJECT_STATUSES), name="ck_subjects_status"),
    sa.Index("ix_subjects_status", "status"),              # the deceased for retention, lists by status (0008)
    sa.Index("ix_subjects_withdrawn_at", "withdrawn_at"),  # the withdrawn for retention (0008)
    sqlite_autoincrement=True,
)

templates = sa.Table(
    "templates", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),   # public face_id
    sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
    sa.Column("pack_id", sa.String(128), nullable=False),
    sa.Column("embedding_enc", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("quality", sa.Float),
    sa.Column("quality_detail", sa.Text),    # JSON text
    sa.Column("source", sa.String(256)),
    sa.Column("image_enc", sa.LargeBinary),  # only with FACEGATE_STORE_IMAGES=1
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_templates_subject_pk", "subject_pk"),
    sa.Index("ix_templates_pack_id", "pack_id"),
    sa.Index("ix_templates_key_id", "key_id"),
    sqlite_autoincrement=True,
)

template_family = sa.Table(
    # A template's second opinions (revision 0004): the same photo embedded by another model of the
    # pack (``model``: "sface"), made at enrolment, by import or by ``facegate templates backfill``.
    # The 1:N search rescores its shortlist with them. Gone with the template (ON DELETE CASCADE, and
    # deleted explicitly by erasure and template deletion).
    "template_family", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("template_id", sa.Integer, sa.ForeignKey("templates.id", ondelete="CASCADE"), nullable=False),
    sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
    sa.Column("pack_id", sa.String(128), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("embedding_enc", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.UniqueConstraint("template_id", "model", name="uq_template_family_template_model"),
    sa.Index("ix_template_family_subject_pk", "subject_pk"),
    sa.Index("ix_template_family_key_id", "key_id"),
    sqlite_autoincrement=True,
)

change_log = sa.Table(
    "change_log", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("op", sa.String(8), nullable=False),
    sa.Column("template_id", sa.Integer, nullable=False),
    sa.Column("subject_pk", sa.Integer, nullable=False),
    sa.Column("pack_id", sa.String(128), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.CheckConstraint("op IN ('add', 'remove')", name="ck_change_log_op"),
    sqlite_autoincrement=True,
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.String(40), nullable=False),      # ISO-8601 UTC, part of the hashed fields
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("key_id", sa.String(64)),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("subject_id", sa.String(128)),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("scores", sa.Text),            # JSON text
    sa.Column("request_id", sa.String(128)),
    sa.Column("client_id", sa.String(128)),
    sa.Column("detail", sa.Text),            # JSON text; never images or templates
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_log_subject_id", "subject_id"),
    sqlite_autoincrement=True,
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256)),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("revoked_at", TS),
    sa.Column("rate_limit_per_minute", sa.Integer),
    sa.Column("client_id", sa.String(128)),
    sa.CheckConstraint(check_sql("role", ROLES), name="ck_api_keys_role"),
)

import_items = sa.Table(
    "import_items", metadata,
    sa.Column("item_key", sa.String(64), primary_key=True),   # sha256(subject_id, photo bytes)
    sa.Column("subject_id", sa.String(128), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),       # done | error
    sa.Column("template_id", sa.Integer),
    sa.Column("error", sa.String(64)),
    sa.Column("updated_at", TS, nullable=False),
    sa.Index("ix_import_items_subject_id", "subject_id"),
)

store_info = sa.Table(
    "store_info", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# ---------------------------------------------------------------- workflows (revision 0002)

certifications = sa.Table(
    # One row per pension-certification attempt; a period's status is derived from them.
    "certifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
    sa.Column("period", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),          # face | manual
    sa.Column("valid_until", TS),
    sa.Column("score", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("fmr", sa.Float),
    sa.Column("liveness_session_id", sa.String(128)),
    sa.Column("reasons", sa.Text),                               # JSON list
    sa.Column("note", sa.Text),                                  # operator's note for manual decisions
    sa.Column("operator", sa.String(64)),                        # the console operator of a manual decision (0006)
    sa.Column("alternative", sa.String(16)),                     # a way without a face: vocab.ALTERNATIVE_METHODS (0007)
    sa.Column("checked_by", sa.String(128)),                     # who checked the person that way (0007)
    sa.Column("key_id", sa.String(64)),
    sa.Column("client_id", sa.String(128)),
    sa.Column("decision_id", sa.String(64)),
    sa.Column("created_at", TS, nullable=False),
    sa.CheckConstraint(check_sql("outcome", CERT_OUTCOMES), name="ck_certifications_outcome"),
    sa.CheckConstraint(check_sql("method", CERT_METHODS), name="ck_certifications_method"),
    sa.Index("ix_certifications_subject_period", "subject_pk", "period"),
    sa.Index("ix_certifications_period", "period"),
    sqlite_autoincrement=True,
)

certification_captures = sa.Table(
    # Encrypted embeddings of certification captures: the 1:N check for one face certifying
    # for several subjects. Erased with the subject.
    "certification_captures", metadata,
    sa.Column("certification_id", sa.Integer, sa.ForeignKey("certifications.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
    sa.Column("period", sa.String(16), nullable=False),
    sa.Column("pack_id", sa.String(128), nullable=False),
    sa.Column("embedding_enc", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_certification_captures_period", "period", "pack_id"),
    sa.Index("ix_certification_captures_subject_pk", "subject_pk"),   # erasure, retention (0008)
)

fraud_signals = sa.Table(
    "fraud_signals", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),    # shared_face | repeated_failures | deceased_subject | liveness_failed
    sa.Column("subject_id", sa.String(128), nullable=False),
    sa.Column("other_subject_id", sa.String(128)),
    sa.Column("certification_id", sa.Integer),
    sa.Column("period", sa.String(16)),
    sa.Column("detail", sa.Text),                        # JSON: scores, reasons; never biometrics
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_fraud_signals_subject_id", "subject_id"),
    sa.Index("ix_fraud_signals_kind", "kind"),
    sqlite_autoincrement=True,
)

kiosks = sa.Table(
    "kiosks", metadata,
    sa.Column("kiosk_id", sa.String(64), primary_key=True),
    sa.Column("location", sa.String(256), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("disabled_at", TS),
    sa.CheckConstraint(check_sql("status", KIOSK_STATUSES), name="ck_kiosks_status"),
)

kiosk_events = sa.Table(
    # One row per kiosk authentication: the per-kiosk report reads it.
    "kiosk_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kiosk_id", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),      # document | subject | search
    sa.Column("decision", sa.String(16), nullable=False),  # match | no_match | manual_review | error
    sa.Column("reason", sa.String(64)),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_kiosk_events_kiosk_id", "kiosk_id"),
    sqlite_autoincrement=True,
)

# ---------------------------------------------------------------- shared service state (revision 0003)
# What a request leaves for the next one, whichever replica serves it. Times are epoch seconds
# (floats), as the liveness code measures them.

liveness_sessions = sa.Table(
    # A challenge, its capture's counters, the verdict and the one-time consumption.
    "liveness_sessions", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64)),                   # the API key that opened it; only it may use it
    sa.Column("subject_id", sa.String(128)),
    sa.Column("purpose", sa.String(64)),
    sa.Column("challenge", sa.Text, nullable=False),     # JSON list of actions
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),   # sha256 of the capture token
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),   # the capture must be complete by then
    sa.Column("frames", sa.Integer, nullable=False, server_default="0"),
    sa.Column("frame_bytes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("first_t", sa.Float),
    sa.Column("last_t", sa.Float),
    sa.Column("non_monotonic", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("observed", sa.Integer, nullable=False, server_default="0"),   # frames tracked so far (0005)
    sa.Column("completed_at", sa.Float),
    sa.Column("valid_until", sa.Float),                  # a passed session may be consumed until then
    sa.Column("consumed_at", sa.Float),
    sa.Column("result", sa.Text),                        # JSON verdict; never biometrics
    sa.Column("embedding_enc", sa.LargeBinary),          # the live face's embedding, encrypted
    sa.Column("key_id", sa.String(64)),
    sa.CheckConstraint(check_sql("status", LIVENESS_STATUSES), name="ck_liveness_sessions_status"),
    sa.Index("ix_liveness_sessions_owner_status", "owner", "status"),
    sa.Index("ix_liveness_sessions_expires_at", "expires_at"),
    sa.Index("ix_liveness_sessions_subject_id", "subject_id"),    # erasure, retention (0008)
)

liveness_frames = sa.Table(
    # A pending session's capture: frames reduced on arrival to what the judge uses, encrypted;
    # deleted once the session is judged.
    "liveness_frames", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(64), sa.ForeignKey("liveness_sessions.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("t", sa.Float, nullable=False),
    sa.Column("data_enc", sa.LargeBinary, nullable=False),   # JPEG, AES-GCM
    sa.Column("observation_enc", sa.LargeBinary),            # the tracker's JSON observation, AES-GCM (0005)
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.UniqueConstraint("session_id", "seq", name="uq_liveness_frames_session_seq"),
    sqlite_autoincrement=True,
)

rate_buckets = sa.Table(
    # Token buckets of the per-key rate limits, shared by every replica.
    "rate_buckets", metadata,
    sa.Column("bucket", sa.String(128), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

# ---------------------------------------------------------------- the operator console (revision 0006)

reference_photos = sa.Table(
    # The enrolment photo's face, cropped (2x the face box, longer side <= 400 px, JPEG) and
    # encrypted, bound to its subject and template: what a reviewer compares a capture with, and
    # what `facegate templates reembed` makes another pack's templates from. Gone with the template.
    "reference_photos", metadata,
    sa.Column("template_id", sa.Integer, sa.ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
    sa.Column("photo_enc", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_reference_photos_subject_pk", "subject_pk"),
    sa.Index("ix_reference_photos_key_id", "key_id"),
)

liveness_evidence = sa.Table(
    # A judged session's best frames (3 at most), encrypted, with their per-frame scores; handed
    # to the decision that consumes the session (and deleted then), or purged with the session.
    "liveness_evidence", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(64), sa.ForeignKey("liveness_sessions.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("t", sa.Float, nullable=False),
    sa.Column("scores", sa.Text),                        # JSON: PAD per model, yaw, face size; never biometrics
    sa.Column("data_enc", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.UniqueConstraint("session_id", "seq", name="uq_liveness_evidence_session_seq"),
    sqlite_autoincrement=True,
)

review_cases = sa.Table(
    # A decision that went to a person: the queue of the operator console. ``claimed_by`` /
    # ``claim_expires_at``: the reviewer who holds it; ``decided_*``: the person's decision (the
    # certification ledger records it too); ``purge_after``: when its evidence goes.
    "review_cases", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("workflow", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE")),
    sa.Column("subject_id", sa.String(128)),
    sa.Column("certification_id", sa.Integer),
    sa.Column("kiosk_id", sa.String(64)),
    sa.Column("period", sa.String(16)),
    sa.Column("outcome", sa.String(16), nullable=False),   # what the automatic decision said
    sa.Column("reasons", sa.Text),                       # JSON list
    sa.Column("scores", sa.Text),                        # JSON: score, threshold, fmr, quality, liveness
    sa.Column("signals", sa.Text),                       # JSON list of fraud signal kinds
    sa.Column("created_at", TS, nullable=False),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claim_expires_at", TS),
    sa.Column("decided_by", sa.String(64)),
    sa.Column("decided_at", TS),
    sa.Column("decision", sa.String(16)),
    sa.Column("decided_subject_id", sa.String(128)),     # a kiosk search: the subject the person chose (None: none)
    sa.Column("note", sa.Text),
    sa.Column("purge_after", TS),
    # A kiosk case: the kiosk key that opened it (only it may wait for the answer) and when the
    # person stops waiting; unclaimed then, the case is ``expired`` (0010).
    sa.Column("opened_by_key", sa.String(64)),
    sa.Column("wait_until", TS),
    sa.CheckConstraint(check_sql("workflow", REVIEW_WORKFLOWS), name="ck_review_cases_workflow"),
    sa.CheckConstraint(check_sql("status", REVIEW_STATUSES), name="ck_review_cases_status"),
    sa.Index("ix_review_cases_status_created", "status", "created_at", "id"),
    sa.Index("ix_review_cases_subject_pk", "subject_pk"),
    sa.Index("ix_review_cases_purge_after", "purge_after"),
    sqlite_autoincrement=True,
)

review_evidence = sa.Table(
    # The frames a case's decision rested on, encrypted, bound to the case, kind and position.
    "review_evidence", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("scores", sa.Text),                        # JSON per-frame scores
    sa.Column("data_enc", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.CheckConstraint(check_sql("kind", EVIDENCE_KINDS), name="ck_review_evidence_kind"),
    sa.UniqueConstraint("case_id", "kind", "seq", name="uq_review_evidence_case_kind_seq"),
    sa.Index("ix_review_evidence_key_id", "key_id"),
    sqlite_autoincrement=True,
)

operators = sa.Table(
    # People who sign in to the console. ``password_hash``: argon2id (None: single sign-on only).
    "operators", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(256)),
    sa.Column("role", sa.String(16)),                  # None: no role granted yet (0009)
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("password_hash", sa.String(256)),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("disabled_at", TS),
    # A single sign-on operator is the provider's (issuer, sub), never a name (0009); a local
    # operator has neither.
    sa.Column("sso_issuer", sa.String(512)),
    sa.Column("sso_subject", sa.String(255)),
    sa.CheckConstraint(check_sql("role", OPERATOR_ROLES), name="ck_operators_role"),
    sa.CheckConstraint(check_sql("status", OPERATOR_STATUSES), name="ck_operators_status"),
    sa.UniqueConstraint("sso_issuer", "sso_subject", name="uq_operators_sso"),
)

operator_totp = sa.Table(
    # An operator's TOTP secret (RFC 6238), encrypted; ``confirmed_at`` is set once a code made
    # with it was accepted (until then the operator is enrolling). ``last_step``: the time step
    # of the last accepted code, so a code is never accepted twice.
    "operator_totp", metadata,
    sa.Column("operator", sa.String(64), sa.ForeignKey("operators.name", ondelete="CASCADE"), primary_key=True),
    sa.Column("secret_enc", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("confirmed_at", TS),
    sa.Column("last_step", sa.Integer),
    sa.Column("created_at", TS, nullable=False),
)

operator_sessions = sa.Table(
    # Console sessions in the database (any replica serves any request): only the sha256 of the
    # cookie's secret is stored, with the session's CSRF token.
    "operator_sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("operator", sa.String(64), sa.ForeignKey("operators.name", ondelete="CASCADE"), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("via", sa.String(16), nullable=False, server_default="password"),   # password | oidc
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_seen", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),          # absolute end
    sa.Column("ended_at", TS),
    # The TOTP secret shown to this session while enrolling (once), until a code confirms it, and
    # the data key that encrypted it (0009).
    sa.Column("totp_pending_enc", sa.LargeBinary),
    sa.Column("key_id", sa.String(64)),
    sa.CheckConstraint(check_sql("stage", CONSOLE_STAGES), name="ck_operator_sessions_stage"),
    sa.Index("ix_operator_sessions_operator", "operator"),
)

sign_in_failures = sa.Table(
    # Failed console sign-ins per key (a source address, a name whether an operator has it or
    # not, a device cookie): the growing delays of facegate.workflows.review.operators (0009).
    "sign_in_failures", metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_at", sa.Float, nullable=False),        # epoch seconds
)

# ---------------------------------------------------------------- compliance (revision 0007)
# The 2025 face-recognition rules (docs/compliance.md): the notice shown, consent records, the
# alternative offered, and the retention lease.

notices = sa.Table(
    # The deployer's notice (告知), one row per published version; older versions are kept, since a
    # consent names the version it was given to.
    "notices", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("body", sa.Text, nullable=False),          # JSON: {"zh-CN": {field: text}, "en": {...}}
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("published_by", sa.String(128), nullable=False),
    sa.Column("published_at", TS, nullable=False),
)

consent_records = sa.Table(
    # One row per consent asked (单独同意): given or declined, for a subject or a liveness session,
    # for one purpose, to one notice version. Withdrawal sets ``withdrawn_at``; rows stay (they
    # are the evidence that consent was asked), they hold no biometrics.
    "consent_records", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject_id", sa.String(128)),
    sa.Column("liveness_session_id", sa.String(64)),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("notice_version", sa.Integer, nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("recorded_by", sa.String(128), nullable=False),
    sa.Column("guardian_name", sa.String(128)),          # a minor's guardian (who consented for them)
    sa.Column("guardian_relation", sa.String(32)),
    sa.Column("recorded_at", TS, nullable=False),
    sa.Column("withdrawn_at", TS),
    sa.Column("withdrawn_by", sa.String(128)),
    sa.CheckConstraint(check_sql("purpose", PURPOSES), name="ck_consent_records_purpose"),
    sa.CheckConstraint(check_sql("channel", CONSENT_CHANNELS), name="ck_consent_records_channel"),
    sa.CheckConstraint(check_sql("decision", CONSENT_DECISIONS), name="ck_consent_records_decision"),
    sa.Index("ix_consent_records_subject_id", "subject_id"),
    sa.Index("ix_consent_records_session", "liveness_session_id"),
    sqlite_autoincrement=True,
)

alternatives_offered = sa.Table(
    # A person who declined the face check was told the way without a face: recorded, so the
    # certification lists say ``alternative_offered`` instead of ``overdue``.
    "alternatives_offered", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject_id", sa.String(128), nullable=False),
    sa.Column("consent_record_id", sa.Integer),
    sa.Column("period", sa.String(16)),
    sa.Column("offered_by", sa.String(128), nullable=False),
    sa.Column("offered_at", TS, nullable=False),
    sa.Index("ix_alternatives_offered_subject_id", "subject_id"),
    sqlite_autoincrement=True,
)

retention_runs = sa.Table(
    # The retention lease (one purge at a time across replicas) and the last run: ``holder``
    # owns the purge until ``lease_until``. One row, name = "purge".
    "retention_runs", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(128)),
    sa.Column("lease_until", TS),
    sa.Column("last_started_at", TS),
    sa.Column("last_finished_at", TS),
    sa.Column("last_counts", sa.Text),                   # JSON: data class -> rows purged
)
