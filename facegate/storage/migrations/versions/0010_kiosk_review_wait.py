"""the kiosk waits for its review (issue 38): a kiosk case remembers the key that opened it and
when the person stops waiting; a case nobody took by then is ``expired``

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("review_cases") as batch:
        batch.add_column(sa.Column("opened_by_key", sa.String(64)))
        batch.add_column(sa.Column("wait_until", TS))
        batch.drop_constraint("ck_review_cases_status", type_="check")
        batch.create_check_constraint("ck_review_cases_status", "status IN ('pending', 'decided', 'expired')")


def downgrade() -> None:
    op.execute("UPDATE review_cases SET status = 'decided' WHERE status = 'expired'")
    with op.batch_alter_table("review_cases") as batch:
        batch.drop_constraint("ck_review_cases_status", type_="check")
        batch.create_check_constraint("ck_review_cases_status", "status IN ('pending', 'decided')")
        batch.drop_column("wait_until")
        batch.drop_column("opened_by_key")
