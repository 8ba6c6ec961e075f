"""Webhooks through a durable outbox, signed the way Apiframe signs them.

A job's state change and the outbox row for its event commit in one transaction (``enqueue`` runs
inside it), so an event is never lost to a crash and never sent for a change that rolled back. Rows
still pending when the server stops are sent after it restarts. ``webhookStatus`` ends ``delivered``
or ``failed`` with the terminal event, and ``webhookError`` on the job says why its last try failed.
Progress events are sent at most once per 10 points.

Deliveries run on a small thread pool, so one receiver that hangs costs only its own tries: at most
``PER_ACCOUNT`` deliveries of one account and ``PER_TARGET`` to one host:port are in flight at once,
and a row is claimed (``sending``) only when a worker takes it. A claim is a lease: it lasts one try's
timeout and a margin, so a row whose server stopped or died mid-try is taken again by any server once
the claim has lapsed, while no other server sends a row under a live claim (claims set and judged by
the database's clock on PostgreSQL, whatever the servers' say; delivery is at least once: a try that
outlives its claim, or that a stopped server cut short, is made again, its last included). A server
never tries a row it is still trying. A job's events go out in order: a row waits while an earlier row
of its job is unfinished. Every error of a try (building the request, resolving, connecting, the
answer) counts against that delivery alone.
Network errors, DNS failures and every status but 2xx and 410 are retried with exponential backoff;
a URL that does not parse, a refused target (private address, wrong scheme) and ``410 Gone`` fail at
once, as retrying cannot help. A progress event that fails once a later event of its job is queued
is given up: the later one says more.

``X-Webhook-Signature: sha256=<hex>`` is the HMAC-SHA256 of the raw body keyed with the raw SHA-256
digest of the submitting API key: exactly what the ledger stores, so no secret is kept in clear.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.event import listen
from sqlalchemy.orm import Session, aliased

from openreel.domain.signatures import sign
from openreel.ledger import jobs
from openreel.ledger.db import Database
from openreel.ledger.tables import ApiKey, Job, WebhookDelivery, database_now
from openreel.netguard import BlockedURL, Unresolved, guarded_stream
from openreel.service.views import Presenter, iso
from openreel.settings import Settings

log = logging.getLogger("openreel.webhooks")

DEFAULT_EVENTS = ("completed", "failed")
PROGRESS_STEP = 10
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0
UNRECORDED_RETRY_S = 30.0  # a try whose outcome the ledger could not take is made again after this
# A claim lasts one try's timeout and this (resolving the host, a receiver that answers slowly byte by
# byte), then the row is due again.
CLAIM_MARGIN_S = 10.0
WORKERS = 8
PER_ACCOUNT = 2
PER_TARGET = 4
SCAN = 200  # due rows read at a time
PAGES = 10  # pages of due rows looked at per pass; more wait for the next pass
BUSY_PASS_S = 0.5  # the next pass when a pass left due rows unread
# With nothing due, a pass waits for a wake (an event enqueued, a try ended) or this process's next
# retry; this bounds the wait for rows it cannot know of (another server's, or left by a stopped one).
IDLE_PASS_S = 2.0
PERMANENT_STATUSES = frozenset({410})
UNFINISHED = ("pending", "sending")
MAX_ERROR_CHARS = 300


def payload(event: str, job: Job, presenter: Presenter, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"event": event, "jobId": job.id, "status": job.status, "model": job.model}
    if event == "progress":
        out["progress"] = job.progress
    elif event == "completed":
        # Not the whole job view: built inside the transaction that completes the job, where a look at
        # storage (whether the files expired) would put the network under the commit.
        out.update(
            progress=100,
            result=presenter.result(job, base_url),
            creditCost=presenter.charged(job),
            completedAt=iso(job.completed_at),
        )
    else:
        out["error"] = job.error or job.status.lower()
    return out


@dataclass(frozen=True)
class Delivery:
    """A claimed outbox row with what sending it needs, so a worker never waits on the ledger first."""

    id: int
    job_id: str
    event: str
    url: str
    body: bytes
    digest: bytes
    account_id: str
    target: str
    attempts: int  # tries begun, as read: the claim takes the row only if no other server has since


def target_of(url: str) -> str:
    """host:port, the unit the per-target bound counts; an unparseable URL is its own target."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    except ValueError:
        return url


def describe(exc: Exception) -> tuple[str, bool]:
    """A short reason for a try that raised, and whether retrying is pointless."""
    if isinstance(exc, BlockedURL):
        return str(exc)[:MAX_ERROR_CHARS], not isinstance(exc, Unresolved)
    if isinstance(exc, ValueError | httpx.InvalidURL | httpx.UnsupportedProtocol):
        return f"invalid URL: {exc}"[:MAX_ERROR_CHARS], True
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS], False


class WebhookSender:
    def __init__(self, settings: Settings, db: Database, presenter: Presenter) -> None:
        self.settings = settings
        self.db = db
        self.presenter = presenter
        self.base_url = settings.public_url or settings.local_url
        # Per job: the attempt and progress of the last progress event queued, until the job ends.
        self._last_progress: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()  # the ids of the rows being tried here
        self._per_account: Counter[str] = Counter()
        self._per_target: Counter[str] = Counter()
        self._retries: list[float] = []  # heap of the monotonic times this process's retries fall due
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._work: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()  # None: stop
        self._thread = threading.Thread(target=self._loop, name="openreel-webhooks", daemon=True)
        # Daemon threads, not a ThreadPoolExecutor (whose threads the interpreter joins at exit): a
        # receiver that keeps a try alive must never keep the server from stopping.
        self._workers = [
            threading.Thread(target=self._serve, name=f"openreel-webhook-{i}", daemon=True)
            for i in range(WORKERS)
        ]

    def start(self) -> None:
        self._thread.start()
        for worker in self._workers:
            worker.start()

    def close(self) -> None:
        """Stop taking rows and give the tries under way one timeout to end; rows claimed but not
        finished stay ``sending`` until their claim lapses, then any server takes them."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + self.settings.webhook_timeout_s + 5
        self._thread.join(max(0.0, deadline - time.monotonic()))
        for _ in self._workers:  # behind whatever the last pass claimed
            self._work.put(None)
        for worker in self._workers:
            if worker.is_alive():
                worker.join(max(0.0, deadline - time.monotonic()))

    def enqueue(self, session: Session, job_id: str, event: str) -> None:
        """Add the event to the outbox inside the caller's transaction, if the job asked for it."""
        session.flush()
        job = session.get(Job, job_id)
        if job is None or not job.webhook_url:
            return
        session.refresh(job)
        event = "failed" if job.status == jobs.CANCELLED else event
        if event != "progress":
            with self._lock:  # the job has ended: no progress follows
                self._last_progress.pop(job_id, None)
        if event not in (job.webhook_events or DEFAULT_EVENTS):
            if event != "progress":
                job.webhook_status = None  # the job's end is not an event it asked for: none was sent
            return
        if event == "progress" and not self._progress_due(job_id, job.attempts, job.progress):
            return
        base_url = (self.settings.public_url or job.base_url or self.base_url).rstrip("/")
        body = json.dumps(payload(event, job, self.presenter, base_url))
        due = database_now(session)
        session.add(
            WebhookDelivery(job_id=job_id, event=event, url=job.webhook_url, body=body, next_attempt_at=due)
        )
        # Woken once the row is committed: a pass before that cannot see it, and the next is seconds away.
        # Registered once per session however many events it adds (SQLAlchemy keys it by the listener).
        listen(session, "after_commit", self._woken)

    def _woken(self, _session: Session) -> None:
        self._wake.set()

    def _progress_due(self, job_id: str, attempt: int, progress: int) -> bool:
        """Every ``PROGRESS_STEP`` points of an attempt's progress (a retried job's starts again at 0)."""
        with self._lock:
            last_attempt, last = self._last_progress.get(job_id, (attempt, -PROGRESS_STEP))
            if last_attempt == attempt and progress < 100 and progress - last < PROGRESS_STEP:
                return False
            self._last_progress[job_id] = (attempt, progress)
            return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            unread = True
            try:
                unread = self._dispatch()
            except Exception:
                log.exception("webhook dispatch failed")
            self._wake.wait(BUSY_PASS_S if unread else self._until_next_retry(started))

    def _until_next_retry(self, started: float) -> float:
        """Seconds to the next retry this process scheduled that the pass begun at ``started`` could not
        take (one that fell due during it included), at most ``IDLE_PASS_S``."""
        with self._lock:
            while self._retries and self._retries[0] <= started:
                heapq.heappop(self._retries)
            due = self._retries[0] if self._retries else math.inf
        return max(0.0, min(due - time.monotonic(), IDLE_PASS_S))

    def _retry_in(self, seconds: float) -> None:
        with self._lock:
            heapq.heappush(self._retries, time.monotonic() + seconds)
        self._wake.set()

    def _dispatch(self) -> bool:
        """Claim the due rows that fit the bounds, in id order, and hand each to a worker; whether due
        rows were left unread (the pass ended at its page limit).

        Accounts already at their bound are left out of the query, so that one account's backlog
        cannot fill the scan and hide other accounts' rows. Rows left for want of a free worker or
        bound wait for a try to end, which wakes the loop.
        """
        with self._lock:
            free = WORKERS - len(self._in_flight)
            full_accounts = [account for account, n in self._per_account.items() if n >= PER_ACCOUNT]
        if free <= 0:
            return False
        earlier = aliased(WebhookDelivery)
        unfinished_before = exists().where(
            earlier.job_id == WebhookDelivery.job_id,
            earlier.id < WebhookDelivery.id,
            earlier.status.in_(UNFINISHED),
        )
        due_rows = (
            select(
                WebhookDelivery.id,
                WebhookDelivery.job_id,
                WebhookDelivery.event,
                WebhookDelivery.url,
                WebhookDelivery.body,
                WebhookDelivery.attempts,
                ApiKey.key_hash,
                Job.account_id,
            )
            .join(Job, Job.id == WebhookDelivery.job_id)
            .join(ApiKey, ApiKey.id == Job.api_key_id)
            .where(
                # A sending row whose claim lapsed is due again (its server stopped or died mid-try).
                WebhookDelivery.status.in_(UNFINISHED),
                WebhookDelivery.next_attempt_at <= bindparam("now"),
                ~unfinished_before,
                Job.account_id.not_in(full_accounts),
            )
            .order_by(WebhookDelivery.id)
            .limit(SCAN)
        )
        reserved: list[Delivery] = []
        unread = False
        try:
            # Read without the write lock, so an idle pass never holds up a writer; the claim writes.
            with self.db.read() as session:
                now = database_now(session)
                after = 0
                # Pages by id, so that rows for targets already at their bound (filtered here, not in
                # SQL) cannot hide the rows behind them.
                for page in range(PAGES):
                    due = session.execute(due_rows.where(WebhookDelivery.id > after), {"now": now}).all()
                    for row_id, job_id, event, url, body, attempts, key_hash, account_id in due:
                        after = row_id
                        if len(reserved) == free:
                            break
                        delivery = Delivery(
                            id=row_id,
                            job_id=job_id,
                            event=event,
                            url=url,
                            body=body.encode(),
                            digest=bytes.fromhex(key_hash),
                            account_id=account_id,
                            target=target_of(url),
                            attempts=attempts,
                        )
                        if not self._stop.is_set() and self._reserve(delivery):
                            reserved.append(delivery)
                    if len(reserved) == free or len(due) < SCAN:
                        break
                    unread = page == PAGES - 1
            taken = self._claim(reserved) if reserved else set()
        except BaseException:
            for delivery in reserved:
                self._release(delivery)
            raise
        for delivery in reserved:
            if delivery.id in taken:
                self._work.put(delivery)
            else:
                self._release(delivery)
        return unread

    def _claim(self, reserved: list[Delivery]) -> set[int]:
        """The ids of the rows claimed here: those no server has claimed since they were read (every
        claim counts a try begun, so ``attempts`` tells). The claim lasts until ``next_attempt_at``."""
        with self.db.session() as session:
            now = database_now(session)
            until = now + timedelta(seconds=self.settings.webhook_timeout_s + CLAIM_MARGIN_S)
            connection = session.connection()
            return {
                delivery.id
                for delivery in reserved
                if connection.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == delivery.id,
                        WebhookDelivery.attempts == delivery.attempts,
                        # Still due: not finished, nor rescheduled by a try whose claim had lapsed.
                        WebhookDelivery.status.in_(UNFINISHED),
                        WebhookDelivery.next_attempt_at <= now,
                    )
                    .values(status="sending", attempts=delivery.attempts + 1, next_attempt_at=until)
                ).rowcount
            }

    def _reserve(self, delivery: Delivery) -> bool:
        with self._lock:
            if (
                delivery.id in self._in_flight
                or self._per_account[delivery.account_id] >= PER_ACCOUNT
                or self._per_target[delivery.target] >= PER_TARGET
            ):
                return False
            self._per_account[delivery.account_id] += 1
            self._per_target[delivery.target] += 1
            self._in_flight.add(delivery.id)
            return True

    def _release(self, delivery: Delivery) -> None:
        with self._lock:
            self._in_flight.discard(delivery.id)
            self._per_account[delivery.account_id] -= 1
            self._per_target[delivery.target] -= 1
            if self._per_account[delivery.account_id] <= 0:
                del self._per_account[delivery.account_id]
            if self._per_target[delivery.target] <= 0:
                del self._per_target[delivery.target]
        self._wake.set()

    def _serve(self) -> None:
        while (delivery := self._work.get()) is not None:
            self._deliver(delivery)

    def _deliver(self, delivery: Delivery) -> None:
        """One try of one row; whatever goes wrong is recorded on that row and nowhere else."""
        try:
            retry_s = self._record(delivery, *self._attempt(delivery))
            if retry_s is not None:
                self._retry_in(retry_s)
        except Exception:
            log.exception(
                "webhook %s for job %s: the try could not be recorded", delivery.event, delivery.job_id
            )
            self._unclaim(delivery)
        finally:
            self._release(delivery)

    def _unclaim(self, delivery: Delivery) -> None:
        """Put a row whose outcome could not be written back in line (a later try of the same
        event), so that neither it nor the job's later events wait for a restart."""
        try:
            with self.db.session() as session:
                session.execute(
                    update(WebhookDelivery)
                    .where(*self._still_ours(delivery))
                    .values(
                        status="pending",
                        next_attempt_at=database_now(session) + timedelta(seconds=UNRECORDED_RETRY_S),
                    )
                )
            self._retry_in(UNRECORDED_RETRY_S)
        except Exception:
            log.exception("webhook row %d stays sending until its claim lapses", delivery.id)

    @staticmethod
    def _still_ours(delivery: Delivery) -> tuple[Any, ...]:
        """Where the row is still under this claim: sending, and claimed by no one since."""
        return (
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.status == "sending",
            WebhookDelivery.attempts == delivery.attempts + 1,
        )

    def _attempt(self, delivery: Delivery) -> tuple[str | None, bool]:
        """(None, False) when the receiver took it, else why not and whether retrying is pointless."""
        try:
            status = self._post(delivery)
        except Exception as exc:
            return describe(exc)
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", status in PERMANENT_STATUSES

    def _post(self, delivery: Delivery) -> int:
        """The receiver's status code."""
        headers = {
            "Content-Type": "application/json",
            "X-Webhook-Event": delivery.event,
            "X-Webhook-Signature": sign(delivery.body, delivery.digest),
            "User-Agent": "openreel-webhooks",
        }
        with guarded_stream(
            "POST",
            delivery.url,
            allow_private=self.settings.allow_private_urls,
            timeout_s=self.settings.webhook_timeout_s,
            max_redirects=0,
            content=delivery.body,
            headers=headers,
        ) as response:
            return response.status_code

    def _record(self, delivery: Delivery, error: str | None, permanent: bool) -> float | None:
        """Write the try's outcome; the seconds until the retry it scheduled, if it did."""
        event, job_id = delivery.event, delivery.job_id
        retry_s = None
        with self.db.session() as session:
            row = session.scalar(select(WebhookDelivery).where(*self._still_ours(delivery)).with_for_update())
            if row is None:
                # The claim lapsed and another server took the row: its try is the one recorded.
                log.warning("webhook %s for job %s: claim lapsed before the try ended", event, job_id)
                return None
            row.last_error = error
            if error is None:
                row.status = "delivered"
            elif (
                permanent or row.attempts >= self.settings.webhook_attempts or self._superseded(session, row)
            ):
                row.status = "failed"
                log.warning("webhook %s for job %s failed for good: %s", event, job_id, error)
            else:
                row.status = "pending"
                retry_s = min(FIRST_RETRY_S * 2 ** (row.attempts - 1), MAX_RETRY_S)
                row.next_attempt_at = database_now(session) + timedelta(seconds=retry_s)
                log.warning("webhook %s for job %s: %s (try %d)", event, job_id, error, row.attempts)
            if event != "progress":
                job = session.get(Job, job_id)
                if job is not None:
                    job.webhook_error = error
                    if row.status in ("delivered", "failed"):
                        job.webhook_status = row.status
        return retry_s

    @staticmethod
    def _superseded(session: Session, row: WebhookDelivery) -> bool:
        """A progress event with a later event of its job queued behind it."""
        if row.event != "progress":
            return False
        later = select(WebhookDelivery.id).where(
            WebhookDelivery.job_id == row.job_id, WebhookDelivery.id > row.id
        )
        return session.scalar(later.limit(1)) is not None
