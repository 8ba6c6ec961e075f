"""Housekeeping: files nobody will ask for any more, removed on a thread of its own rather than between the
dispatcher's claims (on SQLite a sweep still holds the one write turn while it deletes)."""

from __future__ import annotations

import logging
import threading

from openreel.ledger import deletions, servers, uploads
from openreel.ledger.db import Database
from openreel.ledger.tables import utcnow
from openreel.storage.base import Storage

log = logging.getLogger("openreel.housekeeping")

SWEEP_INTERVAL_S = 60.0


class Housekeeper:
    def __init__(self, db: Database, storage: Storage, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.db = db
        self.storage = storage
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openreel-housekeeping", daemon=True)

    def remove_partials(self) -> None:
        """The half-written files of the last shutdown: run before any worker writes new ones, by the
        owner of the data directory while no other server runs there (``storage.owner``)."""
        removed = self.storage.remove_partials()
        if removed:
            log.warning("removed %d half-written file(s) left by the last shutdown", removed)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def sweep(self) -> int:
        """Expired uploads, their rows and their files (how many); the reports of servers long gone."""
        now = utcnow()
        with self.db.session() as session:
            servers.forget_stopped(session, now)
            return uploads.sweep_expired(session, self.storage, now)

    def retry_deletions(self) -> int:
        """The stored objects whose deletion the store refused before, asked again when due."""
        return deletions.sweep(self.db, self.storage)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Each on its own: an upload the store keeps refusing must not hold the deletions back.
            for task, doing in (
                (self.sweep, "sweeping expired uploads"),
                (self.retry_deletions, "retrying deletions"),
            ):
                try:
                    task()
                except Exception:
                    log.exception("%s failed", doing)
            self._stop.wait(self.interval_s)
