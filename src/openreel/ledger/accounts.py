"""Accounts and API keys. Keys are long random secrets, so their unsalted SHA-256 is what is stored:
it is enough to authenticate, and it is exactly the key Apiframe-style webhook signatures need."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
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
