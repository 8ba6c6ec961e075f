"""The append-only credit ledger. Each entry moves the account's balance in the same transaction, so
the balance is always the sum of the entries and reading it costs one row, however long the ledger."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from openreel.ledger.tables import Account, CreditEntry


class InsufficientCredits(Exception):
    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"{required} credits required, {available} available")
        self.required = required
        self.available = available


def lock_balances(session: Session, account_ids: Iterable[str]) -> dict[str, int]:
    """The accounts' balances, locked until the transaction ends (FOR UPDATE on PostgreSQL, taken in one
    order so that two transactions locking the same accounts cannot deadlock; SQLite is already serial)."""
    query = select(Account.id, Account.balance).where(Account.id.in_(sorted(set(account_ids))))
    rows = session.execute(query.order_by(Account.id).with_for_update()).tuples()
    return {account_id: balance for account_id, balance in rows}


def balance(session: Session, account_id: str) -> int:
    return int(session.scalar(select(Account.balance).where(Account.id == account_id)) or 0)


def _entry(
    account_id: str, amount: int, kind: str, job_id: str | None = None, note: str | None = None
) -> dict[str, Any]:
    return {"account_id": account_id, "amount": amount, "kind": kind, "job_id": job_id, "note": note}


def _post(session: Session, *entries: dict[str, Any]) -> None:
    """Insert the entries (CreditEntry's columns) and move each account's balance by their sum, in SQL,
    so concurrent posts all count; an account already loaded in the session reads its balance again at
    its next use. Bulk inserts: a charge is part of every submission."""
    if not entries:
        return
    session.execute(insert(CreditEntry), list(entries))
    moves: dict[str, int] = defaultdict(int)
    for entry in entries:
        moves[entry["account_id"]] += entry["amount"]
    for account_id, amount in moves.items():
        session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(balance=Account.balance + amount)
            .execution_options(synchronize_session=False)
        )
        loaded = session.identity_map.get(session.identity_key(Account, account_id))
        if loaded is not None:
            session.expire(loaded, ["balance"])


def grant(session: Session, account_id: str, amount: int, note: str | None = None) -> None:
    if amount <= 0:
        raise ValueError("a grant must be a positive number of credits")
    _post(session, _entry(account_id, amount, "grant", note=note))


def charge(session: Session, charges: Iterable[tuple[str, str, int]]) -> None:
    """Post (account id, job id, amount) charges whose balances the caller checked under
    ``lock_balances`` in this transaction."""
    _post(session, *(_entry(account_id, -amount, "charge", job_id) for account_id, job_id, amount in charges))


def refund(session: Session, account_id: str, job_id: str, amount: int, note: str) -> None:
    """Called only by the terminal compare-and-set winner; the unique (job, kind) key backs that up."""
    if amount:
        _post(session, _entry(account_id, amount, "refund", job_id, note))


def entries(session: Session, account_id: str) -> list[CreditEntry]:
    return list(
        session.scalars(
            select(CreditEntry).where(CreditEntry.account_id == account_id).order_by(CreditEntry.id)
        )
    )
