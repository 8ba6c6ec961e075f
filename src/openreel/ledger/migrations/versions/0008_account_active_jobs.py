"""accounts.active_jobs: the account's queued and running jobs, kept with each charge and settlement

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("active_jobs", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE accounts SET active_jobs = (SELECT COUNT(*) FROM jobs WHERE jobs.account_id = accounts.id "
        "AND jobs.status IN ('QUEUED', 'PROCESSING'))"
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("active_jobs")
