"""Stored objects no job names any more (a deleted job's videos, those of an attempt that lost its race
or its lease): the store is asked at once, and what it refuses is asked again by the housekeeping, after
longer and longer waits, until it is gone. A deleted job's videos are written down in the transaction
that deletes the job, so a server that dies before the store has answered loses track of none."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta

from sqlalchemy import delete as delete_rows
from sqlalchemy import select
from sqlalchemy.orm import Session

from openreel.ledger.db import Database
from openreel.ledger.tables import PendingDeletion, database_now
from openreel.storage.base import Storage

log = logging.getLogger("openreel.deletions")

FIRST_RETRY_S = 60.0
LONGEST_WAIT_S = 3600.0
SWEEP_BATCH = 100


def doom(session: Session, keys: Iterable[str]) -> None:
    """Write the keys down in the caller's transaction, the one that stops naming them; ``delete`` them
    once it has committed."""
    now = database_now(session)
    for key in keys:
        session.merge(PendingDeletion(key=key, attempts=0, next_attempt_at=now))


def delete(db: Database, storage: Storage, keys: Sequence[str]) -> None:
    """Ask the store to delete each key now; the keys it refuses are kept for the housekeeping's
    ``sweep``. Never raises: whatever the store or the database says, the caller's job has moved on."""
    if not keys:
        return
    refused = _ask(storage, keys)
    try:
        with db.session() as session:
            _settle(session, keys, refused)
    except Exception:
        log.exception("recording the deletion of %s failed (refused by the store: %s)", keys, list(refused))


def sweep(db: Database, storage: Storage, limit: int = SWEEP_BATCH) -> int:
    """The deletions that are due, asked again (how many the store removed). The store is asked between
    two transactions, not inside one: on SQLite a transaction holds the one write turn."""
    with db.session() as session:
        due = session.scalars(
            select(PendingDeletion.key)
            .where(PendingDeletion.next_attempt_at <= database_now(session))
            .order_by(PendingDeletion.next_attempt_at)
            .limit(limit)
        ).all()
    if not due:
        return 0
    refused = _ask(storage, due)
    with db.session() as session:
        _settle(session, due, refused)
    return len(due) - len(refused)


def _ask(storage: Storage, keys: Sequence[str]) -> dict[str, str]:
    """Delete each key the store will: the refusals (key: why) do not stop the others."""
    refused: dict[str, str] = {}
    for key in keys:
        try:
            storage.delete(key)
        except Exception as exc:
            refused[key] = f"{type(exc).__name__}: {exc}"
            log.warning("deleting %s failed (%s); it is tried again later", key, refused[key])
    return refused


def _settle(session: Session, keys: Sequence[str], refused: Mapping[str, str]) -> None:
    gone = [key for key in keys if key not in refused]
    if gone:
        session.execute(delete_rows(PendingDeletion).where(PendingDeletion.key.in_(gone)))
    if not refused:
        return
    now = database_now(session)
    for key, error in refused.items():
        row = session.get(PendingDeletion, key)
        if row is None:
            row = PendingDeletion(key=key, attempts=0)
            session.add(row)
        row.attempts += 1
        wait = min(FIRST_RETRY_S * 2 ** (row.attempts - 1), LONGEST_WAIT_S)
        row.next_attempt_at = now + timedelta(seconds=wait)
        row.last_error = error[:1000]
