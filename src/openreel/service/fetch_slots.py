"""Requests fetching image URLs at submit at once: each holds a request thread while it waits on someone
else's server, so slow hosts must not take them all, nor one account take them from the others."""

from __future__ import annotations

import threading
from collections import Counter

TOTAL = 8
PER_ACCOUNT = 2


class FetchSlots:
    def __init__(self, total: int = TOTAL, per_account: int = PER_ACCOUNT) -> None:
        self._total = total
        self._per_account = per_account
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def take(self, account_id: str) -> str | None:
        """A slot for the account, or why there is none (the request is refused, not kept waiting)."""
        with self._lock:
            if self._held[account_id] >= self._per_account:
                return f"this account is already fetching images for {self._per_account} requests"
            if self._held.total() >= self._total:
                return "the server is fetching too many images just now"
            self._held[account_id] += 1
            return None

    def give_back(self, account_id: str) -> None:
        with self._lock:
            self._held[account_id] -= 1
            if self._held[account_id] <= 0:
                del self._held[account_id]
