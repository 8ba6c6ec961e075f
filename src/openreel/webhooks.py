"""Webhooks through a durable outbox, signed the way Apiframe signs them.

A job's state change and the outbox row for its event commit in one transaction (``enqueue`` runs
inside it), so an event is never lost to a crash and never sent for a change that rolled back. A
sender thread delivers due rows in order, retrying failures with exponential backoff; rows still
pending when the server stops are sent after it restarts. ``webhookStatus`` ends ``delivered`` or
``failed`` with the terminal event. Progress events are sent at most once per 10 points.

``X-Webhook-Signature: sha256=<hex>`` is the HMAC-SHA256 of the raw body keyed with the raw SHA-256
digest of the submitting API key: exactly what the ledger stores, so no secret is kept in clear.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openreel.api.present import Presenter
from openreel.ledger import jobs
from openreel.ledger.db import Database
from openreel.ledger.tables import ApiKey, Job, WebhookDelivery, utcnow
from openreel.netguard import BlockedURL, guarded_stream
from openreel.sdk.signatures import sign
from openreel.settings import Settings

log = logging.getLogger("openreel.webhooks")

DEFAULT_EVENTS = ("completed", "failed")
PROGRESS_STEP = 10
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0
BATCH = 20


def payload(event: str, job: Job, presenter: Presenter, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"event": event, "jobId": job.id, "status": job.status, "model": job.model}
    if event == "progress":
        out["progress"] = job.progress
    elif event == "completed":
        wire = presenter.job(job, base_url)
        out.update(
            progress=100,
            result=wire["result"],
            creditCost=wire["creditCost"],
            completedAt=wire["completedAt"],
        )
    else:
        out["error"] = job.error or job.status.lower()
    return out


class WebhookSender:
    def __init__(self, settings: Settings, db: Database, presenter: Presenter) -> None:
        self.settings = settings
        self.db = db
        self.presenter = presenter
        self.base_url = settings.public_url or f"http://{settings.host}:{settings.port}"
        self._last_progress: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openreel-webhooks", daemon=True)

    def start(self) -> None:
        with self.db.session() as session:
            session.execute(
                update(WebhookDelivery).where(WebhookDelivery.status == "sending").values(status="pending")
            )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(self.settings.webhook_timeout_s + 5)

    def enqueue(self, session: Session, job_id: str, event: str) -> None:
        """Add the event to the outbox inside the caller's transaction, if the job asked for it."""
        session.flush()
        job = session.get(Job, job_id)
        if job is None or not job.webhook_url:
            return
        session.refresh(job)
        event = "failed" if job.status == jobs.CANCELLED else event
        if event not in (job.webhook_events or DEFAULT_EVENTS):
            if event != "progress":
                job.webhook_status = "delivered"
            return
        if event == "progress" and not self._progress_due(job_id, job.progress):
            return
        body = json.dumps(payload(event, job, self.presenter, self.base_url))
        session.add(WebhookDelivery(job_id=job_id, event=event, url=job.webhook_url, body=body))
        self._wake.set()

    def _progress_due(self, job_id: str, progress: int) -> bool:
        with self._lock:
            last = self._last_progress.get(job_id, -PROGRESS_STEP)
            if progress < 100 and progress - last < PROGRESS_STEP:
                return False
            self._last_progress[job_id] = progress
            return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self._send_due()
            except Exception:
                log.exception("webhook sender failed")
                sent = 0
            if not sent:
                self._wake.wait(0.5)
                self._wake.clear()

    def _send_due(self) -> int:
        with self.db.session() as session:
            due = session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
                .order_by(WebhookDelivery.id)
                .limit(BATCH)
            ).all()
            for row in due:
                row.status = "sending"
            work = []
            for row in due:
                job = session.get(Job, row.job_id)
                key = session.get(ApiKey, job.api_key_id) if job else None
                assert key is not None
                work.append((row.id, row.job_id, row.event, row.url, row.body.encode(), key.key_hash))
        for delivery_id, job_id, event, url, body, key_hash in work:
            if self._stop.is_set():
                break
            error = self._post(url, event, body, bytes.fromhex(key_hash))
            self._record(delivery_id, job_id, event, error)
        return len(work)

    def _post(self, url: str, event: str, body: bytes, digest: bytes) -> str | None:
        """None when the receiver answered 2xx, else what went wrong."""
        headers = {
            "Content-Type": "application/json",
            "X-Webhook-Event": event,
            "X-Webhook-Signature": sign(body, digest),
            "User-Agent": "openreel-webhooks",
        }
        try:
            with guarded_stream(
                "POST",
                url,
                allow_private=self.settings.allow_private_urls,
                timeout_s=self.settings.webhook_timeout_s,
                max_redirects=0,
                content=body,
                headers=headers,
            ) as response:
                return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except (httpx.HTTPError, BlockedURL) as exc:
            return f"{type(exc).__name__}: {exc}"

    def _record(self, delivery_id: int, job_id: str, event: str, error: str | None) -> None:
        with self.db.session() as session:
            row = session.get(WebhookDelivery, delivery_id)
            assert row is not None
            row.attempts += 1
            row.last_error = error
            if error is None:
                row.status = "delivered"
            elif row.attempts >= self.settings.webhook_attempts:
                row.status = "failed"
                log.warning("webhook %s for job %s failed for good: %s", event, job_id, error)
            else:
                row.status = "pending"
                delay = min(FIRST_RETRY_S * 2 ** (row.attempts - 1), MAX_RETRY_S)
                row.next_attempt_at = utcnow() + timedelta(seconds=delay)
                log.warning("webhook %s for job %s: %s (try %d)", event, job_id, error, row.attempts)
            if event != "progress" and row.status in ("delivered", "failed"):
                job = session.get(Job, job_id)
                if job is not None:
                    job.webhook_status = row.status
                with self._lock:
                    self._last_progress.pop(job_id, None)
