"""The append-only credit ledger. Each entry moves the account's balance in the same transaction, so
the balance is always the sum of the entries and reading it costs one row, however long the ledger."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openreel.ledger.tables import Account, CreditEntry


class InsufficientCredits(Exception):
    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"{required} credits required, {available} available")
        self.required = required
        self.available = available


def lock_account(session: Session, account_id: str) -> Account:
    """Serialise balance checks per account (FOR UPDATE on PostgreSQL; SQLite is already serial)."""
    query = select(Account).where(Account.id == account_id).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one()


def balance(session: Session, account_id: str) -> int:
    return int(session.scalar(select(Account.balance).where(Account.id == account_id)) or 0)


def _post(session: Session, entry: CreditEntry) -> CreditEntry:
    """Add the entry and move the balance by its amount, in SQL, so concurrent posts all count; an
    account already loaded in the session reads its balance again at its next use."""
    session.add(entry)
    session.execute(
        update(Account)
        .where(Account.id == entry.account_id)
        .values(balance=Account.balance + entry.amount)
        .execution_options(synchronize_session=False)
    )
    loaded = session.identity_map.get(session.identity_key(Account, entry.account_id))
    if loaded is not None:
        session.expire(loaded, ["balance"])
    return entry


def grant(session: Session, account_id: str, amount: int, note: str | None = None) -> CreditEntry:
    if amount <= 0:
        raise ValueError("a grant must be a positive number of credits")
    return _post(session, CreditEntry(account_id=account_id, amount=amount, kind="grant", note=note))


def charge(session: Session, account: Account, job_id: str, amount: int) -> None:
    """``account`` as ``lock_account`` returned it, in this transaction."""
    if account.balance < amount:
        raise InsufficientCredits(amount, account.balance)
    _post(session, CreditEntry(account_id=account.id, amount=-amount, kind="charge", job_id=job_id))


def refund(session: Session, account_id: str, job_id: str, amount: int, note: str) -> None:
    """Called only by the terminal compare-and-set winner; the unique (job, kind) key backs that up."""
    if amount:
        entry = CreditEntry(account_id=account_id, amount=amount, kind="refund", job_id=job_id, note=note)
        _post(session, entry)


def entries(session: Session, account_id: str) -> list[CreditEntry]:
    return list(
        session.scalars(
            select(CreditEntry).where(CreditEntry.account_id == account_id).order_by(CreditEntry.id)
        )
    )
