"""shared service state: liveness sessions and their frames, rate-limit buckets

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "liveness_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64)),
        sa.Column("subject_id", sa.String(128)),
        sa.Column("purpose", sa.String(64)),
        sa.Column("challenge", sa.Text, nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("frames", sa.Integer, nullable=False, server_default="0"),
        sa.Column("frame_bytes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_t", sa.Float),
        sa.Column("last_t", sa.Float),
        sa.Column("non_monotonic", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("completed_at", sa.Float),
        sa.Column("valid_until", sa.Float),
        sa.Column("consumed_at", sa.Float),
        sa.Column("result", sa.Text),
        sa.Column("embedding_enc", sa.LargeBinary),
        sa.Column("key_id", sa.String(64)),
        sa.CheckConstraint("status IN ('pending', 'judging', 'passed', 'failed', 'consumed')",
                           name="ck_liveness_sessions_status"),
    )
    op.create_index("ix_liveness_sessions_owner_status", "liveness_sessions", ["owner", "status"])
    op.create_index("ix_liveness_sessions_expires_at", "liveness_sessions", ["expires_at"])
    op.create_table(
        "liveness_frames",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("liveness_sessions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("t", sa.Float, nullable=False),
        sa.Column("data_enc", sa.LargeBinary, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.UniqueConstraint("session_id", "seq", name="uq_liveness_frames_session_seq"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "rate_buckets",
        sa.Column("bucket", sa.String(128), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_table("liveness_frames")
    op.drop_table("liveness_sessions")
