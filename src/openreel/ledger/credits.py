"""The append-only credit ledger. Each entry moves the account's balance in the same transaction, so
the balance is always the sum of the entries and reading it costs one row, however long the ledger.

The account row counts its active (queued and running) jobs the same way: a job's charge adds it, its
settlement (when it ends, refunded or not) takes it away, in the statement that moves the balance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from openreel.ledger.tables import Account, CreditEntry


class InsufficientCredits(Exception):
    def __init__(self, required: int, available: int) -> None:
        super().__init__(f"{required} credits required, {available} available")
        self.required = required
        self.available = available


@dataclass
class AccountTotals:
    balance: int
    active_jobs: int


def lock_totals(session: Session, account_ids: Iterable[str]) -> dict[str, AccountTotals]:
    """The accounts' totals, locked until the transaction ends (FOR UPDATE on PostgreSQL, taken in one
    order so that two transactions locking the same accounts cannot deadlock; SQLite is already serial).
    On PostgreSQL a lock that waited reads the row its holder committed."""
    query = select(Account.id, Account.balance, Account.active_jobs)
    query = query.where(Account.id.in_(sorted(set(account_ids)))).order_by(Account.id).with_for_update()
    rows = session.execute(query)
    return {account_id: AccountTotals(balance, active) for account_id, balance, active in rows}


def totals(session: Session, account_id: str) -> AccountTotals:
    """Unlocked: for a check ahead of costly work, made again under the lock when charging."""
    balance, active = session.execute(
        select(Account.balance, Account.active_jobs).where(Account.id == account_id)
    ).one()
    return AccountTotals(balance, active)


def balance(session: Session, account_id: str) -> int:
    return int(session.scalar(select(Account.balance).where(Account.id == account_id)) or 0)


def _entry(
    account_id: str, amount: int, kind: str, job_id: str | None = None, note: str | None = None
) -> dict[str, Any]:
    return {"account_id": account_id, "amount": amount, "kind": kind, "job_id": job_id, "note": note}


def _post(session: Session, entries: list[dict[str, Any]], jobs: Mapping[str, int] | None = None) -> None:
    """Insert the entries (CreditEntry's columns) and move each account's balance by their sum and its
    active jobs by ``jobs``, in SQL (one statement an account), so concurrent posts all count; an account
    already loaded in the session reads them again at its next use. Bulk inserts: a charge is part of
    every submission."""
    if entries:
        session.execute(insert(CreditEntry), entries)
    amounts: Counter[str] = Counter()
    for entry in entries:
        amounts[entry["account_id"]] += entry["amount"]
    jobs = jobs or {}
    for account_id in sorted(amounts.keys() | jobs.keys()):
        values: dict[str, Any] = {}
        if amounts[account_id]:
            values["balance"] = Account.balance + amounts[account_id]
        if jobs.get(account_id):
            values["active_jobs"] = Account.active_jobs + jobs[account_id]
        if not values:
            continue
        session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(values)
            .execution_options(synchronize_session=False)
        )
        loaded = session.identity_map.get(session.identity_key(Account, account_id))
        if loaded is not None:
            session.expire(loaded, ["balance", "active_jobs"])


def grant(session: Session, account_id: str, amount: int, note: str | None = None) -> None:
    if amount <= 0:
        raise ValueError("a grant must be a positive number of credits")
    _post(session, [_entry(account_id, amount, "grant", note=note)])


def charge(session: Session, charges: Iterable[tuple[str, str, int]]) -> None:
    """Post the (account id, job id, amount) charges of new jobs, whose totals the caller checked under
    ``lock_totals`` in this transaction; each job counts as active until it is settled."""
    entries = [_entry(account_id, -amount, "charge", job_id) for account_id, job_id, amount in charges]
    _post(session, entries, Counter(entry["account_id"] for entry in entries))


def settle(session: Session, account_id: str, job_id: str, refund: int = 0, note: str | None = None) -> None:
    """A job ended: it no longer counts as active, and ``refund`` credits go back. Called only by the
    terminal compare-and-set winner, which alone keeps the count right; a refund's unique (job, kind)
    key backs it up for the credits."""
    entries = [_entry(account_id, refund, "refund", job_id, note)] if refund else []
    _post(session, entries, {account_id: -1})


def entries(session: Session, account_id: str) -> list[CreditEntry]:
    return list(
        session.scalars(
            select(CreditEntry).where(CreditEntry.account_id == account_id).order_by(CreditEntry.id)
        )
    )
