"""the console's door (issue 31): single sign-on operators keyed by the provider's (issuer, sub)
and no role until granted; sign-in failures counted per source, name and device instead of a
lock held on the operator's row; the TOTP secret being enrolled held by the one session it was
shown to

Operators that an earlier single sign-on created by name keep their row but no identity: they
sign in again once an administrator links them (``facegate operators link-sso``).

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("operators") as batch:
        batch.alter_column("role", existing_type=sa.String(16), nullable=True)
        batch.drop_column("failures")
        batch.drop_column("locked_until")
        batch.add_column(sa.Column("sso_issuer", sa.String(512)))
        batch.add_column(sa.Column("sso_subject", sa.String(255)))
        batch.create_unique_constraint("uq_operators_sso", ["sso_issuer", "sso_subject"])
    with op.batch_alter_table("operator_sessions") as batch:
        batch.add_column(sa.Column("totp_pending_enc", sa.LargeBinary))
        batch.add_column(sa.Column("key_id", sa.String(64)))
    # A secret that was shown but never confirmed was readable by every session of its operator.
    op.execute("DELETE FROM operator_totp WHERE confirmed_at IS NULL")
    op.create_table(
        "sign_in_failures",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sign_in_failures")
    with op.batch_alter_table("operator_sessions") as batch:
        batch.drop_column("key_id")
        batch.drop_column("totp_pending_enc")
    op.execute("DELETE FROM operators WHERE role IS NULL")
    with op.batch_alter_table("operators") as batch:
        batch.drop_constraint("uq_operators_sso", type_="unique")
        batch.drop_column("sso_subject")
        batch.drop_column("sso_issuer")
        batch.add_column(sa.Column("locked_until", TS))
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
        batch.alter_column("role", existing_type=sa.String(16), nullable=False)
