"""Stored objects no job names any more (a deleted job's videos, those of an attempt that lost its race
or its lease): the store is asked at once, and what it refuses is asked again by the housekeeping, after
longer and longer waits, until it is gone. A deleted job's videos, and a reaped attempt's, are written
down in the transaction that stops naming them, so a server that dies before the store has answered
loses track of none; a lost race's are written down only if the store refuses them (they exist before
any transaction could name them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete as delete_rows
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from openreel.ledger.db import Database
from openreel.ledger.tables import PendingDeletion, database_now
from openreel.storage.base import Storage

log = logging.getLogger("openreel.deletions")

FIRST_RETRY_S = 60.0
LONGEST_WAIT_S = 3600.0
# A sweep's rows are claimed for this long: no other server asks the store for them meanwhile, and those
# a round did not get to (it stops at the first refusal) are due again after it.
CLAIM_S = 300.0
SWEEP_BATCH = 100


def doom(session: Session, keys: Sequence[str]) -> None:
    """Write the keys down in the caller's transaction, the one that stops naming them, due after the
    first wait: the caller asks the store itself once it has committed (``delete``), the first try."""
    if keys:
        _write_down(session, keys, database_now(session) + timedelta(seconds=FIRST_RETRY_S))


def delete(db: Database, storage: Storage, keys: Sequence[str]) -> None:
    """Ask the store to delete each key now. The keys it removed leave the outbox and those it refused
    stay there for the housekeeping's ``sweep``, if the database answers (else the log says which were
    refused). Never raises: whatever the store or the database says, the caller's job has moved on."""
    if not keys:
        return
    _, refused = _ask(storage, keys, stop_at_refusal=False)
    try:
        with db.session() as session:
            _settle(session, keys, refused)
    except Exception:
        log.exception("recording the deletion of %s failed (refused by the store: %s)", keys, list(refused))


def sweep(db: Database, storage: Storage, limit: int = SWEEP_BATCH) -> int:
    """The deletions that are due, claimed and asked again (how many the store removed). The store is
    asked between two transactions, not inside one (on SQLite a transaction holds the one write turn),
    and no further once it refuses one: out of reach, each key would wait out its own timeouts."""
    with db.session() as session:
        now = database_now(session)
        due = list(
            session.scalars(
                select(PendingDeletion.key)
                .where(PendingDeletion.next_attempt_at <= now)
                .order_by(PendingDeletion.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if not due:
            return 0
        session.execute(
            update(PendingDeletion)
            .where(PendingDeletion.key.in_(due))
            .values(next_attempt_at=now + timedelta(seconds=CLAIM_S))
        )
    asked, refused = _ask(storage, due, stop_at_refusal=True)
    with db.session() as session:
        _settle(session, asked, refused)
    return len(asked) - len(refused)


def _ask(storage: Storage, keys: Sequence[str], *, stop_at_refusal: bool) -> tuple[list[str], dict[str, str]]:
    """Delete each key the store will: the keys asked about, and the refusals among them (key: why)."""
    asked: list[str] = []
    refused: dict[str, str] = {}
    for key in keys:
        asked.append(key)
        try:
            storage.delete(key)
        except Exception as exc:
            refused[key] = f"{type(exc).__name__}: {exc}"
            log.warning("deleting %s failed (%s); it is tried again later", key, refused[key])
            if stop_at_refusal:
                break
    return asked, refused


def _settle(session: Session, keys: Sequence[str], refused: Mapping[str, str]) -> None:
    gone = [key for key in keys if key not in refused]
    if gone:
        session.execute(delete_rows(PendingDeletion).where(PendingDeletion.key.in_(gone)))
    if not refused:
        return
    now = database_now(session)
    _write_down(session, list(refused), now)  # a lost race's videos have no row yet
    rows = session.scalars(select(PendingDeletion).where(PendingDeletion.key.in_(list(refused))))
    for row in rows:
        row.attempts += 1
        # The exponent bounded: a key refused for weeks must not overflow the float.
        wait = min(FIRST_RETRY_S * 2 ** min(row.attempts - 1, 12), LONGEST_WAIT_S)
        row.next_attempt_at = now + timedelta(seconds=wait)
        row.last_error = refused[row.key][:1000]


def _write_down(session: Session, keys: Sequence[str], due: datetime) -> None:
    """Rows for the keys not written down yet; a key another transaction is writing down (a job deleted
    twice at once) is left to it rather than made a conflict."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    rows = [{"key": key, "attempts": 0, "next_attempt_at": due} for key in keys]
    session.execute(insert(PendingDeletion).values(rows).on_conflict_do_nothing(index_elements=["key"]))
