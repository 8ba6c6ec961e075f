"""The stored objects no job names any more: asked of the store at once, and again with longer and longer
waits while it refuses, until they are gone."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from openreel.ledger import deletions
from openreel.ledger.db import Database
from openreel.ledger.tables import PendingDeletion, utcnow
from openreel.storage.local import LocalStorage

KEYS = ["results/j/1.mp4", "results/j/1.1.mp4", "results/j/1.2.mp4"]


class Refusing(LocalStorage):
    """Local storage whose ``delete`` refuses the keys in ``refused``, as a store out of reach would."""

    refused: set[str]

    def delete(self, key: str) -> None:
        if key in self.refused:
            raise OSError(f"the store did not answer for {key}")
        super().delete(key)


@pytest.fixture
def storage(tmp_path: Path) -> Refusing:
    store = Refusing(tmp_path / "store")
    store.refused = set()
    for key in KEYS:
        staged = store.staging_path(key)
        staged.write_bytes(b"x")
        store.commit(staged, key)
    return store


def pending(db: Database) -> dict[str, PendingDeletion]:
    with db.session() as session:
        return {row.key: row for row in session.scalars(select(PendingDeletion))}


def due_now(db: Database) -> None:
    with db.session() as session:
        session.execute(update(PendingDeletion).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def test_a_refused_deletion_is_asked_again_when_due_until_the_store_removes_it(
    db: Database, storage: Refusing, caplog: pytest.LogCaptureFixture
) -> None:
    storage.refused = {KEYS[1]}
    with caplog.at_level(logging.WARNING, "openreel.deletions"):
        deletions.delete(db, storage, KEYS)
    assert [storage.exists(key) for key in KEYS] == [False, True, False]
    assert f"deleting {KEYS[1]} failed" in caplog.text
    [row] = pending(db).values()
    assert row.key == KEYS[1] and row.attempts == 1 and "did not answer" in (row.last_error or "")
    first_wait = row.next_attempt_at - utcnow()
    assert timedelta(seconds=55) < first_wait <= timedelta(seconds=deletions.FIRST_RETRY_S)

    assert deletions.sweep(db, storage) == 0  # not due yet: the store is not asked
    assert pending(db)[KEYS[1]].attempts == 1

    due_now(db)
    assert deletions.sweep(db, storage) == 0  # still refused: twice the wait
    row = pending(db)[KEYS[1]]
    assert row.attempts == 2 and row.next_attempt_at - utcnow() > timedelta(seconds=115)

    storage.refused = set()
    due_now(db)
    assert deletions.sweep(db, storage) == 1
    assert not storage.exists(KEYS[1]) and pending(db) == {}


def test_the_wait_between_tries_grows_to_an_hour(db: Database, storage: Refusing) -> None:
    storage.refused = {KEYS[0]}
    for _ in range(8):
        deletions.delete(db, storage, KEYS[:1])
    row = pending(db)[KEYS[0]]
    assert row.attempts == 8
    assert row.next_attempt_at - utcnow() <= timedelta(seconds=deletions.LONGEST_WAIT_S)
    assert row.next_attempt_at - utcnow() > timedelta(seconds=deletions.LONGEST_WAIT_S - 5)


def test_doomed_keys_are_written_in_the_callers_transaction_and_forgotten_once_deleted(
    db: Database, storage: Refusing
) -> None:
    """Written before the store is asked: a server that dies in between leaves them to the sweep."""
    with db.session() as session:
        deletions.doom(session, KEYS[:2])
    assert set(pending(db)) == set(KEYS[:2])
    assert deletions.sweep(db, storage) == 2  # due at once
    assert pending(db) == {} and not storage.exists(KEYS[0]) and not storage.exists(KEYS[1])
    assert storage.exists(KEYS[2])
