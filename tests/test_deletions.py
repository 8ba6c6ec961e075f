"""The stored objects no job names any more: asked of the store at once, and again with longer and longer
waits while it refuses, until they are gone."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from openreel.executors.base import EngineState
from openreel.ledger import deletions
from openreel.ledger.db import Database
from openreel.ledger.tables import PendingDeletion, utcnow
from openreel.service.metrics import Metrics
from openreel.settings import Settings
from openreel.storage.local import LocalStorage

KEYS = ["results/j/1.mp4", "results/j/1.1.mp4", "results/j/1.2.mp4"]


class Refusing(LocalStorage):
    """Local storage whose ``delete`` refuses the keys in ``refused`` (all of them with ``"*"``), as a
    store out of reach would, and counts what it was asked."""

    refused: set[str]
    asked: list[str]

    def delete(self, key: str) -> None:
        self.asked.append(key)
        if key in self.refused or "*" in self.refused:
            raise OSError(f"the store did not answer for {key}")
        super().delete(key)


@pytest.fixture
def storage(tmp_path: Path) -> Refusing:
    store = Refusing(tmp_path / "store")
    store.refused, store.asked = set(), []
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


def test_the_wait_between_tries_grows_to_an_hour_and_stays_there(db: Database, storage: Refusing) -> None:
    storage.refused = {KEYS[0]}
    for _ in range(8):
        deletions.delete(db, storage, KEYS[:1])
    assert pending(db)[KEYS[0]].attempts == 8
    with db.session() as session:  # refused for months: the wait must not overflow
        session.execute(update(PendingDeletion).values(attempts=5000))
    deletions.delete(db, storage, KEYS[:1])
    row = pending(db)[KEYS[0]]
    assert row.attempts == 5001
    wait = row.next_attempt_at - utcnow()
    assert (
        timedelta(seconds=deletions.LONGEST_WAIT_S - 5) < wait <= timedelta(seconds=deletions.LONGEST_WAIT_S)
    )


def test_doomed_keys_outlive_a_server_that_died_before_asking_the_store(
    db: Database, storage: Refusing
) -> None:
    """Written in the caller's transaction, due after the first wait (the caller's own ask is the first
    try): a server that dies between its commit and the store's answer leaves them to the sweep."""
    with db.session() as session:
        deletions.doom(session, KEYS[:2])
    assert set(pending(db)) == set(KEYS[:2])
    assert deletions.sweep(db, storage) == 0 and storage.asked == []
    due_now(db)
    assert deletions.sweep(db, storage) == 2
    assert pending(db) == {} and not storage.exists(KEYS[0]) and not storage.exists(KEYS[1])
    assert storage.exists(KEYS[2])


def test_a_sweep_stops_at_the_first_refusal_and_claims_its_rows(db: Database, storage: Refusing) -> None:
    """A store out of reach would make each key wait out its own timeouts: one is asked, and the others
    wait for the claim to lapse. Meanwhile no other server's sweep takes them."""
    with db.session() as session:
        deletions.doom(session, KEYS)
    due_now(db)
    others: list[int] = []

    def refuse_while_another_sweeps(key: str) -> None:
        others.append(deletions.sweep(db, storage))  # another server's round, while this one asks
        raise OSError("the store did not answer")

    storage.delete = refuse_while_another_sweeps  # type: ignore[method-assign]
    assert deletions.sweep(db, storage) == 0
    assert others == [0]
    rows = pending(db)
    assert sorted(row.attempts for row in rows.values()) == [0, 0, 1]
    for row in rows.values():
        if row.attempts == 0:
            claim = row.next_attempt_at - utcnow()
            assert timedelta(seconds=deletions.CLAIM_S - 10) < claim <= timedelta(seconds=deletions.CLAIM_S)


def test_a_job_deleted_twice_at_once_writes_its_keys_down_once(db: Database) -> None:
    """Neither transaction sees the other's row: the second leaves the key to the first, no conflict."""
    second: list[BaseException | None] = []

    def other_request() -> None:
        try:
            with db.session() as session:
                deletions.doom(session, KEYS[:1])
            second.append(None)
        except BaseException as exc:
            second.append(exc)

    with db.session() as session:
        deletions.doom(session, KEYS[:1])
        thread = threading.Thread(target=other_request)
        thread.start()
        time.sleep(0.5)  # the other's insert waits on this transaction's row
    thread.join(10)
    assert second == [None]
    assert list(pending(db)) == KEYS[:1]


def test_the_outbox_is_counted_for_the_operator(db: Database, storage: Refusing) -> None:
    """A count that keeps growing says the store refuses deletions (its log says why)."""
    exported = Metrics(db)
    engine = EngineState.configured(Settings())
    assert "openreel_pending_deletions 0.0" in exported.exposition(engine).decode()
    storage.refused = {"*"}
    deletions.delete(db, storage, KEYS[:2])
    assert "openreel_pending_deletions 2.0" in Metrics(db).exposition(engine).decode()
