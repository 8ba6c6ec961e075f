"""The application services one server runs, and who may use them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio.to_thread

from openreel.domain.catalog import Catalog
from openreel.ledger.db import Database
from openreel.ledger.jobs import Admitted, NewJob
from openreel.ledger.tables import ApiKey
from openreel.scheduler.dispatcher import Dispatcher
from openreel.scheduler.housekeeping import Housekeeper
from openreel.service.batching import Batcher
from openreel.service.fetch_slots import FetchSlots
from openreel.service.key_cache import KeyCache
from openreel.service.metrics import Metrics
from openreel.service.polls import Polls
from openreel.service.queue_order import QueueOrder
from openreel.service.ratelimit import RateLimiter, retry_after_header
from openreel.service.views import Presenter
from openreel.service.webhooks import WebhookSender
from openreel.settings import Settings
from openreel.storage.base import Storage
from openreel.storage.signing import Signer

T = TypeVar("T")
Admissions = Batcher[tuple[ApiKey, NewJob], Admitted]


@dataclass
class Services:
    settings: Settings
    db: Database
    storage: Storage
    signer: Signer
    catalog: Catalog
    dispatcher: Dispatcher
    presenter: Presenter
    webhooks: WebhookSender
    keys: KeyCache
    limiter: RateLimiter
    metrics: Metrics
    admissions: Admissions
    polls: Polls
    queue: QueueOrder
    housekeeper: Housekeeper
    fetches: FetchSlots = field(default_factory=FetchSlots)

    @property
    def local_reads(self) -> bool:
        """Whether reading a job touches only this machine: its database (SQLite, or PostgreSQL on this
        machine, whose reads wait on no lock) and result files on its disk."""
        return self.settings.storage == "local" and self.db.on_this_machine

    def base_url(self, request_base_url: str) -> str:
        """Where links in answers point: the configured public URL, else the base the request came to."""
        return (self.settings.public_url or request_base_url).rstrip("/")


class AuthError(Exception):
    """Refused before the route runs: 401/403 for the key, 429 (with ``retry_after``) for the rate."""

    def __init__(self, status: int, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": self.retry_after} if self.retry_after else None


async def on_loop_if_local(svc: Services, work: Callable[[], T], *, offload: bool = False) -> T:
    """Work that touches only this machine (its database, result files on its disk) runs on the event
    loop, which costs it less than the hop to a worker thread and back (BENCHMARKS.md): a polled job
    presented (its links, whether its file is still stored), an Idempotency-Key's replay. A database or
    object store across the network, and ``offload`` work (files to store or fetch), run in a thread, so a
    slow one never stalls the loop."""
    if svc.local_reads and not offload:
        return work()
    return await anyio.to_thread.run_sync(work)


async def authenticate(svc: Services, raw_key: str | None) -> ApiKey:
    """The active key behind ``raw_key``; every wire protocol maps AuthError to its own shape."""
    if not raw_key:
        raise AuthError(401, "API key is required")
    key = await svc.keys.find(raw_key)
    if key is None:
        raise AuthError(401, "Invalid API key")
    if not key.active:
        raise AuthError(403, "API key is inactive")
    wait = svc.limiter.acquire(key.account_id)
    if wait > 0:
        retry_after = retry_after_header(wait)
        raise AuthError(429, f"Rate limit exceeded; retry after {retry_after} s", retry_after)
    return key
