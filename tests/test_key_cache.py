"""API keys held in memory: a fresh entry answers without the database, an old one is read again,
and a key that does not exist is never held (so a key made a moment later works at once)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from openreel.ledger import accounts
from openreel.ledger.db import Database, migrate
from openreel.ledger.tables import ApiKey
from openreel.service.key_cache import KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'keys.sqlite'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


def made_key(db: Database) -> str:
    with db.session() as session:
        return accounts.create_key(session, name="k").raw


def revoke(db: Database, raw: str) -> None:
    with db.session() as session:
        key = accounts.find_key(session, raw)
        assert key is not None
        accounts.revoke(session, key.id)


def test_a_held_key_keeps_its_state_until_it_expires(db: Database) -> None:
    clock = Clock()
    cache = KeyCache(db, ttl_s=10, clock=clock)
    raw = made_key(db)
    first = asyncio.run(cache.find(raw))
    assert first is not None and first.active
    revoke(db, raw)
    clock.now = 9.9
    held = asyncio.run(cache.find(raw))
    assert held is not None and held.active
    clock.now = 10.0
    fresh = asyncio.run(cache.find(raw))
    assert fresh is not None and not fresh.active


def test_an_unknown_key_is_not_held(db: Database) -> None:
    cache = KeyCache(db, ttl_s=10, clock=Clock())
    raw = "afk_not-yet"
    assert asyncio.run(cache.find(raw)) is None
    with db.session() as session:
        account_id = accounts.create_key(session, name="first").account_id
        session.add(
            ApiKey(account_id=account_id, name="late", prefix=raw[:8], key_hash=accounts.hash_key(raw))
        )
    found = asyncio.run(cache.find(raw))
    assert found is not None and found.name == "late"


def test_with_no_lifetime_every_request_reads_the_key(db: Database) -> None:
    cache = KeyCache(db, ttl_s=0, clock=Clock())
    raw = made_key(db)
    assert asyncio.run(cache.find(raw)) is not None
    revoke(db, raw)
    key = asyncio.run(cache.find(raw))
    assert key is not None and not key.active
