"""Polls that arrive together are read in one statement, and each poller still sees only its own job."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event

from openreel.ledger import jobs
from openreel.ledger.db import Database
from openreel.ledger.tables import Job, new_id
from openreel.scheduler.eta import RenderTimes
from openreel.scheduler.queue_moves import QueueMoves
from openreel.service.polls import Poll, Polled, polls
from openreel.service.queue_order import QueueOrder

from support import SPEC, queued


def submitted(db: Database) -> tuple[str, str]:
    """A new account's queued job: (account id, job id)."""
    job_id, account_id = queued(db, SPEC)
    return account_id, job_id


def polled_together(db: Database, asked: list[Poll]) -> list[Polled | None]:
    dispatcher: Any = SimpleNamespace(render_times=RenderTimes(), engine=SimpleNamespace(slots=1))
    read = polls(db, QueueOrder(QueueMoves()), dispatcher)

    async def together() -> list[Polled | None]:
        return await asyncio.gather(*(read(one) for one in asked))

    return asyncio.run(together())


def test_polls_arriving_together_share_one_read_and_see_only_their_own_jobs(db: Database) -> None:
    (alice, first), (bob, second) = submitted(db), submitted(db)
    deleted_owner, deleted = submitted(db)
    with db.session() as session:
        row = session.get(Job, deleted)
        assert row is not None
        row.status, row.deleted_at = jobs.COMPLETED, row.created_at
    statements: list[str] = []
    event.listen(db.read_engine, "before_cursor_execute", lambda *call: statements.append(call[2]))
    asked = [
        Poll(alice, first),
        Poll(bob, first),  # another account's job
        Poll(bob, second),
        Poll(alice, first),  # the same poll twice in one batch
        Poll(alice, second),
        Poll(deleted_owner, deleted),  # deleted
        Poll(alice, new_id()),  # no such job
        Poll(bob, second, standing=False),
    ]
    seen = polled_together(db, asked)
    assert [None if polled is None else polled.job.id for polled in seen] == [
        first,
        None,
        second,
        first,
        None,
        None,
        None,
        second,
    ]
    positions = [polled.standing.position for polled in seen if polled is not None]
    assert positions == [1, 2, 1, None]
    assert len([s for s in statements if "IN (" in s.upper()]) == 1, statements


def test_a_job_whose_standing_cannot_be_worked_out_fails_no_other_poll(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    (alice, first), (bob, second) = submitted(db), submitted(db)
    with db.session() as session:
        row = session.get(Job, first)
        assert row is not None
        row.spec = {**SPEC, "no_such_field": 1}  # written by a newer server, say
    monkeypatch.setattr(jobs, "MAX_IDS_PER_STATEMENT", 1)  # and each poll its own statement
    seen = polled_together(db, [Poll(alice, first), Poll(bob, second)])
    assert [polled and (polled.job.id, polled.standing.position) for polled in seen] == [
        (first, None),
        (second, 2),
    ]
