"""ix_uploads_account_expires: an account's unexpired uploads summed for its quota from the index alone,
in the transaction that records an upload (on SQLite, the one write turn)

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Built without blocking the table's writes on PostgreSQL; it starts with the index it replaces.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_uploads_account_expires",
            "uploads",
            ["account_id", "expires_at", "byte_size"],
            postgresql_concurrently=True,
        )
        op.drop_index("ix_uploads_account_id", table_name="uploads", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_uploads_account_id", "uploads", ["account_id"], postgresql_concurrently=True)
        op.drop_index("ix_uploads_account_expires", table_name="uploads", postgresql_concurrently=True)
