"""The queue's order, read once and shared by every reply that numbers queued jobs while it holds.

Counting the jobs ahead of one costs a read of every index entry before it (0.36 ms at place 3,000 on
SQLite), and a hosted API's clients poll their jobs every second or two: with 10,000 queued, a server
spent its polls counting. Here one read of the queue's order serves them all until this server's
dispatcher takes or returns a job, a job is cancelled here, or a second has passed (another server's
dispatcher, sharing the database, takes jobs too: its changes show within that second). A job queued
since the read is counted as before: new jobs join the back. While a change of this server's may be
committing, places are counted and nothing is kept.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from openreel.ledger import jobs
from openreel.ledger.tables import JobRecord
from openreel.scheduler.queue_moves import QueueMoves

MAX_AGE_S = 1.0


@dataclass(frozen=True)
class _Order:
    version: int
    read_at: float
    places: dict[str, int]


class QueueOrder:
    def __init__(self, moves: QueueMoves) -> None:
        """``moves``: this server's changes to the queue (its dispatcher's, and its cancels and deletes)."""
        self._moves = moves
        self._order: _Order | None = None

    def changing(self) -> AbstractContextManager[None]:
        """Around a transaction that may take jobs out of the queue other than through this server's
        dispatcher (a cancel, a delete)."""
        return self._moves.moving()

    def places(self, session: Session, shown: Sequence[JobRecord]) -> dict[str, int]:
        """1-based places in the queue of those of ``shown`` that are QUEUED (as read in ``session``)."""
        queued = [job for job in shown if job.status == jobs.QUEUED]
        if not queued:
            return {}
        version, under_way = self._moves.state()
        if under_way:
            return jobs.queue_positions(session, queued)
        order = self._order
        if order is None or order.version != version or time.monotonic() - order.read_at > MAX_AGE_S:
            read_at = time.monotonic()
            places = {job_id: place for place, job_id in enumerate(jobs.queued_ids(session), 1)}
            order = self._order = _Order(version, read_at, places)
        found = {job.id: order.places[job.id] for job in queued if job.id in order.places}
        newer = [job for job in queued if job.id not in order.places]
        return found | (jobs.queue_positions(session, newer) if newer else {})
