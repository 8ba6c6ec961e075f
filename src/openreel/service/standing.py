"""Where an active job stands: its place in the queue and the seconds until its clip is ready."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from openreel.domain.rules import VideoSpec
from openreel.ledger import jobs
from openreel.ledger.tables import JobRecord, utcnow
from openreel.scheduler.dispatcher import Dispatcher
from openreel.scheduler.eta import RenderTimes, Shape, queued_eta, time_left
from openreel.service.queue_order import QueueOrder
from openreel.service.views import Standing

if TYPE_CHECKING:  # the services hold the polls (polls.py), which work out standings
    from openreel.service.services import Services


class Standings:
    """For the jobs one reply shows: their queue places and the running jobs are each read once, when
    first needed. Not with ``functools.cached_property``: Python 3.11 computes those under one lock for
    all instances, and the job list's threads queued there, each behind another's query."""

    def __init__(
        self, session: Session, queue: QueueOrder, times: RenderTimes, slots: int, shown: Sequence[JobRecord]
    ) -> None:
        self.session = session
        self.queue = queue
        self.times = times
        self.slots = slots
        self.shown = shown
        self.now = utcnow()
        self._places: dict[str, int] | None = None
        self._running: list[float | None] | None = None

    @classmethod
    def of_server(cls, svc: Services, session: Session, shown: Sequence[JobRecord]) -> Standings:
        return cls.of_dispatcher(session, svc.queue, svc.dispatcher, shown)

    @classmethod
    def of_dispatcher(
        cls, session: Session, queue: QueueOrder, dispatcher: Dispatcher, shown: Sequence[JobRecord]
    ) -> Standings:
        return cls(session, queue, dispatcher.render_times, dispatcher.engine.slots, shown)

    def _positions(self) -> dict[str, int]:
        if self._places is None:
            self._places = self.queue.places(self.session, self.shown)
        return self._places

    def _left(self, spec: dict[str, object], started: datetime | None, progress: int) -> float | None:
        estimate = self.times.estimate(Shape.of(VideoSpec.from_json(spec)))
        elapsed = (self.now - started).total_seconds() if started else 0.0
        return time_left(estimate, max(elapsed, 0.0), progress)

    def _running_left(self) -> list[float | None]:
        if self._running is None:
            self._running = [self._left(*row) for row in jobs.running(self.session)]
        return self._running

    def of(self, job: JobRecord) -> Standing:
        if job.status == jobs.PROCESSING:
            return Standing(eta_s=_rounded(self._left(job.spec, job.started_at, job.progress)))
        position = self._positions().get(job.id)
        if position is None:  # ended, or claimed since it was read
            return Standing()
        own = self.times.estimate(Shape.of(VideoSpec.from_json(job.spec)))
        eta = queued_eta(own, position - 1, self.times.typical(), self._running_left(), self.slots)
        return Standing(position, _rounded(eta))


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
