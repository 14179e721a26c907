"""operator console: reference photos, decision evidence, review cases, operators and their sessions

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("certifications") as batch:
        batch.add_column(sa.Column("operator", sa.String(64)))
    op.create_table(
        "reference_photos",
        sa.Column("template_id", sa.Integer, sa.ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("photo_enc", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_reference_photos_subject_pk", "reference_photos", ["subject_pk"])
    op.create_index("ix_reference_photos_key_id", "reference_photos", ["key_id"])
    op.create_table(
        "liveness_evidence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("liveness_sessions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("t", sa.Float, nullable=False),
        sa.Column("scores", sa.Text),
        sa.Column("data_enc", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.UniqueConstraint("session_id", "seq", name="uq_liveness_evidence_session_seq"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "review_cases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE")),
        sa.Column("subject_id", sa.String(128)),
        sa.Column("certification_id", sa.Integer),
        sa.Column("kiosk_id", sa.String(64)),
        sa.Column("period", sa.String(16)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text),
        sa.Column("scores", sa.Text),
        sa.Column("signals", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claim_expires_at", TS),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", TS),
        sa.Column("decision", sa.String(16)),
        sa.Column("decided_subject_id", sa.String(128)),
        sa.Column("note", sa.Text),
        sa.Column("purge_after", TS),
        sa.CheckConstraint("workflow IN ('certification', 'kiosk')", name="ck_review_cases_workflow"),
        sa.CheckConstraint("status IN ('pending', 'decided')", name="ck_review_cases_status"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_review_cases_status_created", "review_cases", ["status", "created_at", "id"])
    op.create_index("ix_review_cases_subject_pk", "review_cases", ["subject_pk"])
    op.create_index("ix_review_cases_purge_after", "review_cases", ["purge_after"])
    op.create_table(
        "review_evidence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("scores", sa.Text),
        sa.Column("data_enc", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("kind IN ('frame', 'still')", name="ck_review_evidence_kind"),
        sa.UniqueConstraint("case_id", "kind", "seq", name="uq_review_evidence_case_kind_seq"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_review_evidence_key_id", "review_evidence", ["key_id"])
    op.create_table(
        "operators",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(256)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("password_hash", sa.String(256)),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled_at", TS),
        sa.CheckConstraint("role IN ('reviewer', 'supervisor', 'auditor')", name="ck_operators_role"),
        sa.CheckConstraint("status IN ('active', 'disabled')", name="ck_operators_status"),
    )
    op.create_table(
        "operator_totp",
        sa.Column("operator", sa.String(64), sa.ForeignKey("operators.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("secret_enc", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("confirmed_at", TS),
        sa.Column("last_step", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "operator_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("operator", sa.String(64), sa.ForeignKey("operators.name", ondelete="CASCADE"), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("via", sa.String(16), nullable=False, server_default="password"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.CheckConstraint("stage IN ('mfa', 'enrol', 'active')", name="ck_operator_sessions_stage"),
    )
    op.create_index("ix_operator_sessions_operator", "operator_sessions", ["operator"])


def downgrade() -> None:
    for name in ("operator_sessions", "operator_totp", "operators", "review_evidence", "review_cases",
                 "liveness_evidence", "reference_photos"):
        op.drop_table(name)
    with op.batch_alter_table("certifications") as batch:
        batch.drop_column("operator")
