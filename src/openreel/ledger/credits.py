"""The append-only credit ledger. A balance is always the sum of its entries."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openreel.ledger.tables import Account, CreditEntry


class InsufficientCredits(Exception):
    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"{required} credits required, {available} available")
        self.required = required
        self.available = available


def lock_account(session: Session, account_id: str) -> Account:
    """Serialise balance checks per account (FOR UPDATE on PostgreSQL; SQLite is already serial)."""
    account = session.scalars(select(Account).where(Account.id == account_id).with_for_update()).one()
    return account


def balance(session: Session, account_id: str) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(CreditEntry.amount), 0)).where(CreditEntry.account_id == account_id)
    )
    return int(total or 0)


def grant(session: Session, account_id: str, amount: int, note: str | None = None) -> CreditEntry:
    if amount <= 0:
        raise ValueError("a grant must be a positive number of credits")
    entry = CreditEntry(account_id=account_id, amount=amount, kind="grant", note=note)
    session.add(entry)
    session.flush()
    return entry


def charge(session: Session, account_id: str, job_id: str, amount: int) -> None:
    lock_account(session, account_id)
    available = balance(session, account_id)
    if available < amount:
        raise InsufficientCredits(amount, available)
    session.add(CreditEntry(account_id=account_id, amount=-amount, kind="charge", job_id=job_id))


def refund(session: Session, account_id: str, job_id: str, amount: int, note: str) -> None:
    """Called only by the terminal compare-and-set winner; the unique (job, kind) key backs that up."""
    if amount:
        session.add(
            CreditEntry(account_id=account_id, amount=amount, kind="refund", job_id=job_id, note=note)
        )


def entries(session: Session, account_id: str) -> list[CreditEntry]:
    return list(
        session.scalars(
            select(CreditEntry).where(CreditEntry.account_id == account_id).order_by(CreditEntry.id)
        )
    )
