"""ix_jobs_account_status: the cap on an account's active jobs counts them without reading its history

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Built without blocking the table's writes on PostgreSQL, where a jobs table may be large.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_jobs_account_status", "jobs", ["account_id", "status"], postgresql_concurrently=True
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_jobs_account_status", table_name="jobs", postgresql_concurrently=True)
