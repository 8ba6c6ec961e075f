"""The changes to the queue's order this server makes (claims, re-queues, reaps, cancels), counted so
that a snapshot of the order (service/queue_order.py) knows when it cannot be kept and when it is out
of date. Several threads make them: the dispatcher, the lease keeper, the request handlers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class QueueMoves:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._under_way = 0
        self._done = 0

    @contextmanager
    def moving(self) -> Iterator[None]:
        """Around a transaction that may take jobs out of the queue or put them back."""
        with self._lock:
            self._under_way += 1
        try:
            yield
        finally:
            with self._lock:
                self._under_way -= 1
                self._done += 1

    def state(self) -> tuple[int, bool]:
        """(changes finished, whether one is under way)."""
        with self._lock:
            return self._done, self._under_way > 0
