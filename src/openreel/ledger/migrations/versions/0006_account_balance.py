"""accounts.balance: the sum of the account's credit entries, kept with each entry

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("balance", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE accounts SET balance = (SELECT COALESCE(SUM(amount), 0) FROM credit_entries "
        "WHERE credit_entries.account_id = accounts.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("balance")
