"""template family: a template's second opinions (SFace embeddings of the same photo), encrypted

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "template_family",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("template_id", sa.Integer, sa.ForeignKey("templates.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subject_pk", sa.Integer, sa.ForeignKey("subjects.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("pack_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("embedding_enc", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("template_id", "model", name="uq_template_family_template_model"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_template_family_subject_pk", "template_family", ["subject_pk"])
    op.create_index("ix_template_family_key_id", "template_family", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_template_family_key_id", table_name="template_family")
    op.drop_index("ix_template_family_subject_pk", table_name="template_family")
    op.drop_table("template_family")
