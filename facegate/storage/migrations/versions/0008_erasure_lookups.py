"""erasure lookups: subjects by status and withdrawal, liveness sessions and certification
captures by subject (withdrawal, erasure and the retention rules of the deceased and withdrawn
find their people and a person's rows without reading every subject, session and capture)

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_subjects_status", "subjects", ["status"])
    op.create_index("ix_subjects_withdrawn_at", "subjects", ["withdrawn_at"])
    op.create_index("ix_liveness_sessions_subject_id", "liveness_sessions", ["subject_id"])
    op.create_index("ix_certification_captures_subject_pk", "certification_captures", ["subject_pk"])


def downgrade() -> None:
    op.drop_index("ix_certification_captures_subject_pk", table_name="certification_captures")
    op.drop_index("ix_liveness_sessions_subject_id", table_name="liveness_sessions")
    op.drop_index("ix_subjects_withdrawn_at", table_name="subjects")
    op.drop_index("ix_subjects_status", table_name="subjects")
