"""API keys held in memory for a few seconds, so a client polling its jobs costs no database read
(and no thread hop) to authenticate each request.

Only keys that exist are held: a key created a moment ago, in this process or another, works at
once. A key revoked in the database keeps the state this server last read for up to ``ttl_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread

from openreel.ledger import accounts
from openreel.ledger.db import Database
from openreel.ledger.tables import ApiKey

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry:
    key: ApiKey
    until: float


class KeyCache:
    def __init__(self, db: Database, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    async def find(self, raw_key: str) -> ApiKey | None:
        """The key's row as last read, from memory while fresh, else from the database."""
        digest = accounts.hash_key(raw_key)
        entry = self._entries.get(digest)
        if entry is not None and entry.until > self._clock():
            return entry.key
        key = await to_thread.run_sync(self._load, raw_key)
        if key is not None and self.ttl_s > 0:
            self._keep(digest, key)
        return key

    def _load(self, raw_key: str) -> ApiKey | None:
        with self.db.read() as session:
            return accounts.find_key(session, raw_key)

    def _keep(self, digest: str, key: ApiKey) -> None:
        now = self._clock()
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries = {d: e for d, e in self._entries.items() if e.until > now}
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
            self._entries[digest] = _Entry(key, now + self.ttl_s)
