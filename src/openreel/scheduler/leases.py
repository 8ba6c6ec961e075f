"""Leases, kept on a thread of their own: the dispatcher's thread writes outcomes and hands jobs over,
which may take a while (a busy database), and a healthy job's lease must not run out meanwhile, nor an
expired one wait to be reaped.

The dispatcher says which of its jobs to hold (those whose workers answer, those being prepared, those
whose files are being committed); this thread renews their leases every third of ``lease_ttl_s``, reaps
the expired leases of any server (re-queued, or failed with a refund after the last attempt), and hands
back the jobs another server took or ended (a cancel sent to another server), for the dispatcher to
abandon or stop on its own thread. A dispatcher that has not said what to hold for ``STALE_AFTER_S`` is
stuck: its jobs are let go, for a server that works to take. Each round also reports this server
(``ledger.servers``): whether its engine failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from openreel.ledger import deletions, jobs, servers
from openreel.ledger.db import Database
from openreel.scheduler.preparation import attempt_keys
from openreel.scheduler.queue_moves import QueueMoves
from openreel.storage.base import Storage

log = logging.getLogger("openreel.leases")

# A job held: (job id, attempt).
Held = tuple[str, int]
STALE_AFTER_S = 600.0
RETRY_S = 1.0  # after a round that failed (the database busy, say): leases must not lapse for it


class LeaseKeeper:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        owner: str,
        lease_ttl_s: float,
        max_attempts: int,
        queue: QueueMoves,
        on_job_event: Callable[[Session, str, str], None],
        on_change: Callable[[], None],
        engine_failed: Callable[[], bool],
    ) -> None:
        """``on_job_event`` runs inside the transaction that failed a reaped job; ``on_change`` after a
        round that re-queued, failed, lost or found ended jobs."""
        self.db = db
        self.storage = storage
        self.owner = owner
        self.lease_ttl_s = lease_ttl_s
        self.max_attempts = max_attempts
        self._queue = queue
        self._on_job_event = on_job_event
        self._on_change = on_change
        self._engine_failed = engine_failed
        self._lock = threading.Lock()
        self._held: list[Held] = []
        self._held_at = time.monotonic()
        self._gone = jobs.Renewal()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openreel-leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def hold(self, held: list[Held]) -> None:
        """The jobs whose leases to renew from now on."""
        with self._lock:
            self._held, self._held_at = held, time.monotonic()

    def take_gone(self) -> jobs.Renewal:
        """The held jobs taken by another server, or ended, since the last call."""
        with self._lock:
            gone, self._gone = self._gone, jobs.Renewal()
        return gone

    def keep(self) -> None:
        """One round: renew, reap, report this server, and note the held jobs lost or ended."""
        with self._lock:
            stale = time.monotonic() - self._held_at > STALE_AFTER_S
            held = [] if stale else list(self._held)
        if stale:
            log.error(
                "the dispatcher has said nothing for %.0f s: its jobs' leases are let go", STALE_AFTER_S
            )
        with self._queue.moving(), self.db.session() as session:
            gone = jobs.renew_leases(session, self.owner, held, self.lease_ttl_s) if held else jobs.Renewal()
            reaped = jobs.reap_expired(session, self.max_attempts)
            # What the reaped attempts may have stored belongs to no job (the attempt that takes over stores
            # under its own names; a lapsed one still running somewhere loses its race and removes its own).
            lapsed_keys = [key for a in reaped.lapsed for key in attempt_keys(a.job_id, a.attempt, a.samples)]
            deletions.doom(session, lapsed_keys)
            # A stuck dispatcher renders nothing either: its server is no reason to leave the queue.
            servers.report(session, self.owner, engine_failed=stale or self._engine_failed())
            for job_id in reaped.failed:
                self._on_job_event(session, job_id, "failed")
        if gone.lost or gone.ended:
            with self._lock:
                self._gone |= gone
        if reaped.lapsed:
            log.warning(
                "reaped expired leases: %d re-queued, %d failed", len(reaped.requeued), len(reaped.failed)
            )
            # Not on this thread: a slow store (S3 retrying) must not keep leases from being renewed.
            threading.Thread(
                target=deletions.delete,
                args=(self.db, self.storage, lapsed_keys),
                name="openreel-reaped",
                daemon=True,
            ).start()
        if gone.lost or gone.ended or reaped.lapsed:
            self._on_change()

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.lease_ttl_s / 3
            try:
                self.keep()
            except Exception:
                log.exception("keeping leases failed")
                wait = min(wait, RETRY_S)
            self._stop.wait(wait)
