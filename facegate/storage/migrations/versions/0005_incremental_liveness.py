"""incremental liveness: each frame's tracked observation, and how far a capture is observed

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("liveness_sessions") as batch:
        batch.add_column(sa.Column("observed", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("liveness_frames") as batch:
        batch.add_column(sa.Column("observation_enc", sa.LargeBinary))


def downgrade() -> None:
    with op.batch_alter_table("liveness_frames") as batch:
        batch.drop_column("observation_enc")
    with op.batch_alter_table("liveness_sessions") as batch:
        batch.drop_column("observed")
