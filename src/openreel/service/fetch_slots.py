"""Requests fetching image URLs at submit at once: each holds a request thread while it waits on someone
else's server, so slow hosts must not take them all, nor one account take them from the others."""

from __future__ import annotations

import threading
from collections import Counter

TOTAL = 8
PER_ACCOUNT = 2


class FetchesBusy(Exception):
    """No slot to fetch a request's images now: a 429 with ``Retry-After`` (the same request may pass
    in a moment), in the shape of the request's protocol."""


class FetchSlots:
    def __init__(self, total: int = TOTAL, per_account: int = PER_ACCOUNT) -> None:
        self._total = total
        self._per_account = per_account
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def take(self, account_id: str) -> None:
        """A slot for the account, else ``FetchesBusy`` (the request is refused, not kept waiting)."""
        with self._lock:
            if self._held[account_id] >= self._per_account:
                raise FetchesBusy(f"this account is already fetching images for {self._per_account} requests")
            if self._held.total() >= self._total:
                raise FetchesBusy("the server is fetching too many images just now")
            self._held[account_id] += 1

    def give_back(self, account_id: str) -> None:
        with self._lock:
            self._held[account_id] -= 1
            if self._held[account_id] <= 0:
                del self._held[account_id]
