"""compliance (issue 24): notices, consent records, minors, withdrawal, alternatives, retention lease

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
PURPOSES = ("pension_certification", "identity_verification", "kiosk_service")
CHANNELS = ("capture_page", "counter", "cli", "api")
DECISIONS = ("given", "declined")


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("minor", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("status_since", TS))
        batch.add_column(sa.Column("withdrawn_at", TS))
    op.execute("UPDATE subjects SET status_since = updated_at")
    with op.batch_alter_table("certifications") as batch:
        batch.add_column(sa.Column("alternative", sa.String(16)))
        batch.add_column(sa.Column("checked_by", sa.String(128)))
    op.create_table(
        "notices",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("published_by", sa.String(128), nullable=False),
        sa.Column("published_at", TS, nullable=False),
    )
    op.create_table(
        "consent_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(128)),
        sa.Column("liveness_session_id", sa.String(64)),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("notice_version", sa.Integer, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("recorded_by", sa.String(128), nullable=False),
        sa.Column("guardian_name", sa.String(128)),
        sa.Column("guardian_relation", sa.String(32)),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("withdrawn_at", TS),
        sa.Column("withdrawn_by", sa.String(128)),
        sa.CheckConstraint(_in("purpose", PURPOSES), name="ck_consent_records_purpose"),
        sa.CheckConstraint(_in("channel", CHANNELS), name="ck_consent_records_channel"),
        sa.CheckConstraint(_in("decision", DECISIONS), name="ck_consent_records_decision"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_consent_records_subject_id", "consent_records", ["subject_id"])
    op.create_index("ix_consent_records_session", "consent_records", ["liveness_session_id"])
    op.create_table(
        "alternatives_offered",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(128), nullable=False),
        sa.Column("consent_record_id", sa.Integer),
        sa.Column("period", sa.String(16)),
        sa.Column("offered_by", sa.String(128), nullable=False),
        sa.Column("offered_at", TS, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alternatives_offered_subject_id", "alternatives_offered", ["subject_id"])
    op.create_table(
        "retention_runs",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128)),
        sa.Column("lease_until", TS),
        sa.Column("last_started_at", TS),
        sa.Column("last_finished_at", TS),
        sa.Column("last_counts", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("retention_runs")
    op.drop_index("ix_alternatives_offered_subject_id", "alternatives_offered")
    op.drop_table("alternatives_offered")
    op.drop_index("ix_consent_records_session", "consent_records")
    op.drop_index("ix_consent_records_subject_id", "consent_records")
    op.drop_table("consent_records")
    op.drop_table("notices")
    with op.batch_alter_table("certifications") as batch:
        batch.drop_column("checked_by")
        batch.drop_column("alternative")
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("withdrawn_at")
        batch.drop_column("status_since")
        batch.drop_column("minor")
