"""Accounts and API keys. Keys are long random secrets, so their unsalted SHA-256 is what is stored:
it is enough to authenticate, and it is exactly the key Apiframe-style webhook signatures need."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openreel.ledger import credits
from openreel.ledger.tables import Account, ApiKey

KEY_PREFIX = "afk_"


def key_digest(raw_key: str) -> bytes:
    return hashlib.sha256(raw_key.encode()).digest()


def hash_key(raw_key: str) -> str:
    return key_digest(raw_key).hex()


@dataclass(frozen=True)
class NewKey:
    raw: str
    key_id: str
    account_id: str


def create_key(
    session: Session, *, name: str, account_id: str | None = None, initial_credits: int = 0
) -> NewKey:
    """A new key; without ``account_id`` it opens a new account with its own balance and jobs."""
    if account_id is None:
        account = Account(name=name)
        account.email = ""
        session.add(account)
        session.flush()
        account.email = f"owner@{account.id}.openreel.local"
    else:
        found = session.get(Account, account_id)
        if found is None:
            raise LookupError(f"no account {account_id}")
        account = found
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(account_id=account.id, name=name, prefix=raw[:8], key_hash=hash_key(raw))
    session.add(key)
    session.flush()
    if initial_credits:
        credits.grant(session, account.id, initial_credits, note="initial grant")
    return NewKey(raw=raw, key_id=key.id, account_id=account.id)


def find_key(session: Session, raw_key: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(raw_key))).first()


def account_of(session: Session, reference: str) -> str:
    """The account an operator means: its id, the id of one of its keys, or one of its raw keys."""
    if reference.startswith(KEY_PREFIX):
        key = find_key(session, reference)
        if key is None:
            raise LookupError("no such API key")
        return key.account_id
    if session.get(Account, reference) is not None:
        return reference
    by_id = session.get(ApiKey, reference)
    if by_id is None:
        raise LookupError(f"no account or key with id {reference}")
    return by_id.account_id


def keys(session: Session, account_id: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if account_id is not None:
        query = query.where(ApiKey.account_id == account_id)
    return list(session.scalars(query))


def revoke(session: Session, key_id: str) -> ApiKey:
    """Deactivate a key for good: requests with it get a 403 (within ``key_cache_s`` on a running
    server); its account and jobs stay."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise LookupError(f"no key with id {key_id}")
    key.active = False
    return key


def listing(session: Session) -> list[tuple[Account, int, int]]:
    """Every account with its balance and how many active keys it has, oldest first."""
    active = (
        select(ApiKey.account_id, func.count().label("n"))
        .where(ApiKey.active.is_(True))
        .group_by(ApiKey.account_id)
        .subquery()
    )
    rows = session.execute(
        select(Account, func.coalesce(active.c.n, 0))
        .outerjoin(active, active.c.account_id == Account.id)
        .order_by(Account.created_at, Account.id)
    ).all()
    return [(account, account.balance, int(n)) for account, n in rows]
