"""workflows: pension certifications, their capture embeddings, fraud signals, kiosks

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "certifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("valid_until", TS),
        sa.Column("score", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("fmr", sa.Float),
        sa.Column("liveness_session_id", sa.String(128)),
        sa.Column("reasons", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("key_id", sa.String(64)),
        sa.Column("client_id", sa.String(128)),
        sa.Column("decision_id", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("outcome IN ('certified', 'failed', 'manual_review')", name="ck_certifications_outcome"),
        sa.CheckConstraint("method IN ('face', 'manual')", name="ck_certifications_method"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_certifications_subject_period", "certifications", ["subject_pk", "period"])
    op.create_index("ix_certifications_period", "certifications", ["period"])
    op.create_table(
        "certification_captures",
        sa.Column("certification_id", sa.Integer, sa.ForeignKey("certifications.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("pack_id", sa.String(128), nullable=False),
        sa.Column("embedding_enc", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_certification_captures_period", "certification_captures", ["period", "pack_id"])
    op.create_table(
        "fraud_signals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(128), nullable=False),
        sa.Column("other_subject_id", sa.String(128)),
        sa.Column("certification_id", sa.Integer),
        sa.Column("period", sa.String(16)),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_fraud_signals_subject_id", "fraud_signals", ["subject_id"])
    op.create_index("ix_fraud_signals_kind", "fraud_signals", ["kind"])
    op.create_table(
        "kiosks",
        sa.Column("kiosk_id", sa.String(64), primary_key=True),
        sa.Column("location", sa.String(256), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled_at", TS),
        sa.CheckConstraint("status IN ('active', 'disabled')", name="ck_kiosks_status"),
    )
    op.create_table(
        "kiosk_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kiosk_id", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_kiosk_events_kiosk_id", "kiosk_events", ["kiosk_id"])


def downgrade() -> None:
    op.drop_table("kiosk_events")
    op.drop_table("kiosks")
    op.drop_table("fraud_signals")
    op.drop_table("certification_captures")
    op.drop_table("certifications")
