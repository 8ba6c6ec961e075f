"""Webhooks to a real receiver on loopback: Apiframe's signature, events, retries, webhookStatus,
and an in-process outbox for what one bad receiver must not do to the others."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select, update

from openreel.domain.signatures import sign, verify_webhook
from openreel.ledger import accounts, jobs, tables
from openreel.ledger.db import Database, migrate
from openreel.ledger.tables import Job, WebhookDelivery, utcnow
from openreel.service import webhooks
from openreel.service.views import Presenter
from openreel.service.webhooks import WebhookSender
from openreel.settings import Settings
from openreel.storage.local import LocalStorage
from openreel.storage.signing import Signer

from databases import DIALECTS, throwaway_database
from support import LiveServer, Receiver, running_server, serving, undecodable_png, until, wait_for


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()
    with serving(state) as url:
        yield state, url


def test_signature_is_hmac_of_the_body_keyed_with_the_key_digest() -> None:
    body = b'{"event":"completed"}'
    digest = hashlib.sha256(b"afk_secret").digest()
    assert sign(body, digest) == "sha256=" + hmac.new(digest, body, hashlib.sha256).hexdigest()
    header = sign(body, digest)
    assert verify_webhook(body, header, "afk_secret")
    assert verify_webhook(body, header.removeprefix("sha256="), "afk_secret")
    assert not verify_webhook(body + b" ", header, "afk_secret")
    assert not verify_webhook(body, header, "afk_other")
    assert not verify_webhook(body, None, "afk_secret")
    assert not verify_webhook(body, "sha256=é", "afk_secret")  # forged, and not ASCII: False, no error
    assert not verify_webhook(body, "sha256=\ud800", "afk_secret")


def hooked(url: str, *events: str, **veo_params: str) -> dict[str, Any]:
    """A 4 s fast job telling ``url`` of its end (of ``events`` alone where named)."""
    body: dict[str, Any] = {
        "prompt": "p",
        "model": "veo-3.1-fast",
        "veoParams": {"duration": 4, **veo_params},
        "webhookUrl": url,
    }
    return {**body, "webhookEvents": list(events)} if events else body


def submit_hooked(client: httpx.Client, url: str, *events: str) -> str:
    """A hooked job's id, its webhook pending from the moment it is accepted."""
    job_id: str = client.post("/v2/videos/generate", json=hooked(url, *events)).json()["jobId"]
    assert client.get(f"/v2/jobs/{job_id}").json()["webhookStatus"] == "pending"
    return job_id


def wait_status(server: LiveServer, key: str, job_id: str, status: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    with server.client(key) as client:
        while time.monotonic() < deadline:
            job = client.get(f"/v2/jobs/{job_id}").json()
            if job["webhookStatus"] == status:
                return job
            time.sleep(0.1)
    raise AssertionError(f"webhookStatus stayed {job['webhookStatus']}")


def test_progress_and_completed_events_are_signed_and_delivered(
    server: LiveServer, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    key = server.new_key()
    with server.client(key) as client:
        job_id = submit_hooked(client, url, "progress", "completed")
        wait_for(client, job_id)
    wait_status(server, key, job_id, "delivered")
    digest = hashlib.sha256(key.encode()).digest()
    events = []
    for headers, body in state.calls:
        assert (
            headers["x-webhook-signature"] == "sha256=" + hmac.new(digest, body, hashlib.sha256).hexdigest()
        )
        payload = json.loads(body)
        assert headers["x-webhook-event"] == payload["event"] and payload["jobId"] == job_id
        events.append(payload)
    assert [e["event"] for e in events][-1] == "completed"
    assert any(e["event"] == "progress" for e in events)
    final = events[-1]
    assert final["status"] == "COMPLETED" and final["creditCost"] == 5 and final["progress"] == 100
    assert final["result"]["videoUrl"].startswith(server.url + "/v2/files/results/")
    assert httpx.get(final["result"]["videoUrl"], timeout=30).headers["content-type"] == "video/mp4"


def test_an_end_the_job_did_not_ask_to_hear_of_sends_nothing_and_says_so(
    server: LiveServer, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    key = server.new_key()
    with server.client(key) as client:
        job_id = submit_hooked(client, url, "completed")
        assert client.post(f"/v2/jobs/{job_id}/cancel").json()["status"] == "CANCELLED"
        job = client.get(f"/v2/jobs/{job_id}").json()
    assert (job["webhookStatus"], job["webhookError"]) == (None, None)
    assert [body for _, body in state.calls if json.loads(body)["jobId"] == job_id] == []


def test_failed_event_is_retried_until_delivered(server: LiveServer, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.failures = 1
    key = server.new_key()
    with server.client(key) as client:
        broken = undecodable_png()
        image = client.post("/v2/uploads", files={"file": ("nothing.png", broken, "image/png")}).json()["url"]
        job_id = client.post("/v2/videos/generate", json=hooked(url, image=image)).json()["jobId"]
        assert wait_for(client, job_id)["status"] == "FAILED"
    job = wait_status(server, key, job_id, "delivered")
    assert job["creditCost"] == 0
    assert len(state.calls) == 2
    payload = json.loads(state.calls[-1][1])
    assert (
        payload["event"] == "failed"
        and payload["status"] == "FAILED"
        and "could not be decoded" in payload["error"]
    )


@pytest.mark.live
@pytest.mark.slow
def test_pending_deliveries_survive_a_server_kill(receiver: tuple[Receiver, str], tmp_path: Path) -> None:
    state, url = receiver
    state.failures = 10**6
    env = {"OPENREEL_ALLOW_PRIVATE_URLS": "1", "OPENREEL_X264_PRESET": "ultrafast"}
    with running_server(tmp_path, env) as server:
        key = server.new_key()
        with server.client(key) as client:
            job_id = client.post("/v2/videos/generate", json=hooked(url)).json()["jobId"]
            assert wait_for(client, job_id)["status"] == "COMPLETED"
        deadline = time.monotonic() + 30
        while not state.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.calls, "the first delivery was never tried"
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        state.failures = 0
        tried_before_restart = len(state.calls)
        server.start()
        job = wait_status(server, key, job_id, "delivered")
    assert len(state.calls) > tried_before_restart
    assert json.loads(state.calls[-1][1])["event"] == "completed" and job["status"] == "COMPLETED"


# In-process: a WebhookSender on its own SQLite ledger, with jobs and outbox rows written directly.


class Outbox:
    def __init__(self, root: Path, url: str | None = None, **settings: Any) -> None:
        url = url or f"sqlite:///{root / 'openreel.db'}"
        migrate(url)
        self.db = Database(url)
        self.settings = Settings(data_dir=root, **{"allow_private_urls": True, **settings})
        self.presenter = Presenter(Signer(b"secret"), LocalStorage(root / "files"), 3600)
        self.sender = WebhookSender(self.settings, self.db, self.presenter)

    def account(self) -> accounts.NewKey:
        with self.db.session() as session:
            return accounts.create_key(session, name="test")

    def job(
        self, key: accounts.NewKey, url: str, event: str = "failed", hold_s: float = 0.0, **fields: Any
    ) -> str:
        """A finished job of ``key``'s account with ``event`` in the outbox for ``url``, committed
        ``hold_s`` after it was queued."""
        values: dict[str, Any] = {"status": jobs.FAILED, "error": "boom", **fields}
        with self.db.session() as session:
            job = Job(
                account_id=key.account_id,
                api_key_id=key.key_id,
                model="veo-3.1-fast",
                progress=0,
                input={"prompt": "p"},
                spec={},
                credit_cost=5,
                webhook_url=url,
                webhook_status="pending",
                **values,
            )
            session.add(job)
            session.flush()
            self.sender.enqueue(session, job.id, event)
            time.sleep(hold_s)
            return job.id

    def restart(self) -> None:
        self.sender.close()
        self.sender = WebhookSender(self.settings, self.db, self.presenter)
        self.sender.start()

    def rows(self) -> dict[str, WebhookDelivery]:
        with self.db.read() as session:
            return {row.job_id: row for row in session.scalars(select(WebhookDelivery))}

    def jobs(self) -> dict[str, Job]:
        with self.db.read() as session:
            return {job.id: job for job in session.scalars(select(Job))}

    def settle(self, timeout: float = 15) -> dict[str, WebhookDelivery]:
        """The rows once none is pending or sending any more."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows()
            if all(row.status in ("delivered", "failed") for row in rows.values()):
                return rows
            time.sleep(0.05)
        raise AssertionError({job_id: row.status for job_id, row in rows.items()})


@pytest.fixture(params=DIALECTS)
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    with throwaway_database(request.param, tmp_path) as url:
        box = Outbox(tmp_path, url, webhook_timeout_s=4.0)
        try:
            yield box
        finally:
            box.sender.close()
            box.db.dispose()


POISON = ("http://example.com:99999/hook", "http://[::1/hook", "ftp://127.0.0.1/hook")


def test_a_poison_url_fails_alone_and_strands_no_one(outbox: Outbox, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    poisoned, good = outbox.account(), [outbox.account() for _ in range(3)]

    def batch() -> tuple[list[str], list[str]]:
        bad = [outbox.job(poisoned, poison) for poison in POISON]  # the lowest ids: first in line
        return bad, [outbox.job(key, url) for key in good for _ in range(2)]

    def check(bad: list[str], fine: list[str], tries: int = 1) -> None:
        rows, found = outbox.settle(), outbox.jobs()
        for job_id in fine:
            assert rows[job_id].status == "delivered" and rows[job_id].attempts == tries
            assert found[job_id].webhook_status == "delivered" and found[job_id].webhook_error is None
        for job_id in bad:
            row = rows[job_id]
            assert row.status == "failed" and row.attempts == tries and row.last_error, row.last_error
            assert found[job_id].webhook_status == "failed"
            assert found[job_id].webhook_error == row.last_error

    outbox.sender.start()
    first = batch()
    check(*first)
    assert {json.loads(body)["jobId"] for _, body in state.calls} == set(first[1])

    # The same batch caught mid-flight by a crash of the old sender, its claims since lapsed: the next
    # one sends it all (the crashed tries counted).
    outbox.sender.close()
    second = batch()
    with outbox.db.session() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.status == "pending")
            .values(status="sending", attempts=1, next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    outbox.restart()
    check(*second, tries=2)


def test_a_receiver_that_never_answers_delays_no_other_account(outbox: Outbox) -> None:
    hanging, quick = Receiver(), Receiver()
    hanging.hang = True
    timeout = outbox.settings.webhook_timeout_s
    with serving(hanging) as hanging_url, serving(quick) as quick_url:
        greedy = outbox.account()
        greedy_jobs = {outbox.job(greedy, hanging_url) for _ in range(webhooks.WORKERS + 2)}
        for _ in range(webhooks.PER_TARGET + 1):  # other accounts to the same hanging host
            outbox.job(outbox.account(), hanging_url)
        patient = outbox.job(outbox.account(), quick_url)
        started = time.monotonic()
        outbox.sender.start()
        while outbox.rows()[patient].status != "delivered":
            assert time.monotonic() - started < timeout / 2, "the quick receiver waited on the hanging one"
            time.sleep(0.02)
        time.sleep(0.3)
        arrivals = list(hanging.arrivals)

    def most_at_once(times: list[float]) -> int:
        """The most tries that began within half a timeout of each other: all still in flight then."""
        times = sorted(times)
        return max((sum(1 for t in times if start <= t < start + timeout / 2) for start in times), default=0)

    assert arrivals, "the hanging receiver was never tried"
    assert most_at_once([t for t, job_id in arrivals if job_id in greedy_jobs]) <= webhooks.PER_ACCOUNT
    assert most_at_once([t for t, _ in arrivals]) <= webhooks.PER_TARGET


def test_a_try_that_outlasts_its_time_is_retried(tmp_path: Path) -> None:
    """A receiver that holds the request past the try's time in all: a timeout, tried again later."""
    hanging = Receiver()
    hanging.hang = True
    box = Outbox(tmp_path, webhook_timeout_s=0.5)
    try:
        with serving(hanging) as url:
            job_id = box.job(box.account(), url)
            box.sender.start()
            until(lambda: box.rows()[job_id].last_error, 10, "the first try to end")
            row = box.rows()[job_id]
            assert (row.status, row.attempts) == ("pending", 1), (row.status, row.last_error)
            assert row.last_error == f"DeadlinePassed: {url} took longer than 0.5 s"
            hanging.released.set()
    finally:
        box.sender.close()
        box.db.dispose()


def test_rows_for_a_full_target_do_not_hide_the_rows_behind_them(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More due rows for a host at its bound than one read holds, then another account's row."""
    monkeypatch.setattr(webhooks, "SCAN", 3)
    hanging, quick = Receiver(), Receiver()
    hanging.hang = True
    with serving(hanging) as hanging_url, serving(quick) as quick_url:
        for _ in range(webhooks.PER_TARGET + 3 * 3):  # each its own account: none is at its bound
            outbox.job(outbox.account(), hanging_url)
        patient = outbox.job(outbox.account(), quick_url)
        started = time.monotonic()
        outbox.sender.start()
        while outbox.rows()[patient].status != "delivered":
            assert time.monotonic() - started < outbox.settings.webhook_timeout_s / 2, "the row stayed hidden"
            time.sleep(0.02)


def test_an_idle_outbox_reads_every_few_seconds_and_still_retries_on_time(tmp_path: Path) -> None:
    """Between events the outbox neither writes nor polls: one read every two seconds (for rows other
    servers wrote), yet a retry goes out when it falls due, not at the next idle read."""
    box = Outbox(tmp_path)
    statements: list[str] = []
    event.listen(box.db.engine, "before_cursor_execute", lambda *call: statements.append(call[2]))
    flaky = Receiver(failures=1)
    try:
        with serving(flaky) as url:
            job_id = box.job(box.account(), url)
            box.sender.start()
            assert box.settle()[job_id].attempts == 2
            statements.clear()
            time.sleep(3)
            idle = list(statements)
    finally:
        box.sender.close()
        box.db.dispose()
    (first, _), (second, _) = flaky.arrivals
    assert webhooks.FIRST_RETRY_S <= second - first < webhooks.FIRST_RETRY_S + 0.8
    assert 1 <= len(idle) <= 2 and all(sql.lstrip().startswith("SELECT") for sql in idle), idle


def test_an_event_goes_out_as_soon_as_its_transaction_commits(tmp_path: Path) -> None:
    """Not at the idle outbox's next read: the sender is woken by the commit, not by the enqueue (whose
    row a pass made before the commit cannot see)."""
    box = Outbox(tmp_path)
    state = Receiver()
    try:
        with serving(state) as url:
            box.sender.start()
            key = box.account()
            for _ in range(2):
                box.job(key, url, hold_s=0.5)
                committed = time.monotonic()
                box.settle()
                assert state.arrivals[-1][0] - committed < 1.0
    finally:
        box.sender.close()
        box.db.dispose()


def test_a_row_another_server_tried_since_it_was_read_waits_for_that_retry(tmp_path: Path) -> None:
    """Between a pass's read and its claim another server may try the row, fail and schedule its retry
    (the row pending again): the claim leaves it to that retry rather than send it at once."""

    class Raced(WebhookSender):
        def _claim(self, reserved: list[webhooks.Delivery]) -> set[int]:
            with self.db.session() as session:  # the other server's failed try, written meanwhile
                session.execute(
                    update(WebhookDelivery).values(
                        attempts=WebhookDelivery.attempts + 1, next_attempt_at=utcnow() + timedelta(minutes=1)
                    )
                )
            return super()._claim(reserved)

    box = Outbox(tmp_path)
    box.sender = Raced(box.settings, box.db, box.presenter)
    state = Receiver()
    try:
        with serving(state) as url:
            job_id = box.job(box.account(), url)
            box.sender.start()
            time.sleep(1)
            row = box.rows()[job_id]
    finally:
        box.sender.close()
        box.db.dispose()
    assert state.calls == [] and (row.status, row.attempts) == ("pending", 1)


def test_a_row_another_server_is_sending_waits_for_its_claim_to_lapse(tmp_path: Path) -> None:
    """Several servers share the outbox: a row claimed by a live one is not sent again by another (one
    starting included) until that claim lapses, as it would if its server had died mid-try."""
    box = Outbox(tmp_path)
    state = Receiver()
    try:
        with serving(state) as url:
            job_id = box.job(box.account(), url)
            lapses = utcnow() + timedelta(seconds=1.5)
            with box.db.session() as session:
                session.execute(
                    update(WebhookDelivery).values(status="sending", attempts=1, next_attempt_at=lapses)
                )
            box.sender.start()
            time.sleep(1)
            assert state.calls == [], "sent while another server's claim held"
            row = box.settle()[job_id]
    finally:
        box.sender.close()
        box.db.dispose()
    assert (row.status, row.attempts, len(state.calls)) == ("delivered", 2, 1)


def test_servers_whose_clocks_disagree_judge_claims_on_the_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, shared by servers: a server whose clock runs an hour behind takes a due row at once,
    not an hour later, and the row it claimed is not sent again by one on time while the claim holds,
    nor by one an hour ahead; a row is queued due at the database's now. (The senders' passes are run
    by hand: what they claim goes to their queues, and nothing is sent.)"""
    real = utcnow

    def clock(hours: int) -> None:
        # Wherever the outbox could take the server's time from: a later ``utcnow`` import in
        # webhooks.py would otherwise read the real clock here.
        for module in (tables, webhooks):
            monkeypatch.setattr(module, "utcnow", lambda: real() + timedelta(hours=hours), raising=False)

    with throwaway_database("postgresql", tmp_path) as url:
        box = Outbox(tmp_path, url)
        try:
            job_id = box.job(box.account(), "http://127.0.0.1:9/hook")
            clock(-1)
            box.sender._dispatch()
            assert (box.rows()[job_id].status, box.sender._work.qsize()) == ("sending", 1)
            for hours in (0, 1):
                clock(hours)
                other = WebhookSender(box.settings, box.db, box.presenter)
                other._dispatch()
                assert (box.rows()[job_id].attempts, other._work.qsize()) == (1, 0), hours
            with box.db.session() as session:  # an event is due from the database's now(), the transaction's
                began = session.scalar(select(func.now()))
                box.sender.enqueue(session, job_id, "failed")
            with box.db.read() as session:
                newest = select(WebhookDelivery.next_attempt_at).order_by(WebhookDelivery.id.desc()).limit(1)
                assert session.scalar(newest) == began
        finally:
            box.db.dispose()


def test_a_try_that_outlives_its_claim_leaves_the_row_to_its_new_claimant(tmp_path: Path) -> None:
    """The other server that took the row once the claim lapsed records the outcome, not this one."""
    box = Outbox(tmp_path)
    state = Receiver()
    state.gate = threading.Event()
    try:
        with serving(state) as url:
            job_id = box.job(box.account(), url)
            box.sender.start()
            until(lambda: state.calls, 15, "the first try", every=0.02)
            later = utcnow() + timedelta(minutes=1)
            with box.db.session() as session:  # the claim lapsed and another server took the row
                session.execute(update(WebhookDelivery).values(attempts=2, next_attempt_at=later))
            state.gate.set()
            # The try ended and its outcome was offered to the ledger.
            until(lambda: not box.sender._in_flight, 15, "the try's end", every=0.02)
            row = box.rows()[job_id]
    finally:
        box.sender.close()
        box.db.dispose()
    assert (row.status, row.attempts, row.last_error) == ("sending", 2, None)


def test_webhook_error_shows_the_last_failed_try(tmp_path: Path) -> None:
    box = Outbox(tmp_path, webhook_attempts=2)
    broken, gone, flaky = Receiver(failures=10**6), Receiver(failures=10**6, failure_status=410), Receiver(1)
    flaky.gate = threading.Event()
    try:
        with serving(broken) as broken_url, serving(gone) as gone_url, serving(flaky) as flaky_url:
            key = box.account()
            retried, refused, recovered = (box.job(key, url) for url in (broken_url, gone_url, flaky_url))
            box.sender.start()
            deadline = time.monotonic() + 15
            while len(flaky.calls) < 2:  # the retry is held at the receiver until the gate opens
                assert time.monotonic() < deadline, "the flaky receiver was not retried"
                time.sleep(0.02)
            wire = box.presenter.job(box.jobs()[recovered], "http://127.0.0.1:8000")
            assert wire["webhookStatus"] == "pending" and wire["webhookError"] == "HTTP 500"
            flaky.gate.set()
            rows = box.settle()
        found = {job_id: box.presenter.job(job, "http://x") for job_id, job in box.jobs().items()}
    finally:
        box.sender.close()
        box.db.dispose()
    assert rows[retried].attempts == 2 and rows[retried].last_error == "HTTP 500"
    assert found[retried]["webhookStatus"] == "failed" and found[retried]["webhookError"] == "HTTP 500"
    assert rows[refused].attempts == 1 and len(gone.calls) == 1, "410 Gone is not retried"
    assert found[refused]["webhookStatus"] == "failed" and found[refused]["webhookError"] == "HTTP 410"
    assert rows[recovered].attempts == 2 and rows[recovered].last_error is None
    assert found[recovered]["webhookStatus"] == "delivered" and found[recovered]["webhookError"] is None


def test_a_refused_target_fails_at_once_and_says_why(tmp_path: Path) -> None:
    box = Outbox(tmp_path, allow_private_urls=False)
    try:
        job_id = box.job(box.account(), "http://127.0.0.1:9/hook")
        box.sender.start()
        row = box.settle()[job_id]
        job = box.jobs()[job_id]
    finally:
        box.sender.close()
        box.db.dispose()
    assert row.status == "failed" and row.attempts == 1
    assert "non-public address" in (row.last_error or "") and job.webhook_error == row.last_error


RESULT = {
    "key": "results/clip.mp4",
    "width": 1280,
    "height": 720,
    "durationSeconds": 4.0,
    "fps": 24,
    "hasAudio": False,
    "seed": 1,
}


def completed_payload(box: Outbox, base_url: str | None = None) -> str:
    """The body of a new account's completed job's event in ``box``'s outbox, which is then closed."""
    try:
        job_id = box.job(
            box.account(),
            "http://127.0.0.1:9/hook",
            "completed",
            status=jobs.COMPLETED,
            error=None,
            result=RESULT,
            base_url=base_url,
        )
        return box.rows()[job_id].body
    finally:
        box.db.dispose()


@pytest.mark.parametrize(
    ("public_url", "job_base_url", "expected"),
    [
        (None, "http://127.0.0.1:8123", "http://127.0.0.1:8123/v2/files/results/"),
        (
            "https://videos.example.com/",
            "http://127.0.0.1:8123",
            "https://videos.example.com/v2/files/results/",
        ),
    ],
)
def test_payload_links_never_use_the_bind_address(
    tmp_path: Path, public_url: str | None, job_base_url: str, expected: str
) -> None:
    body = completed_payload(Outbox(tmp_path, host="0.0.0.0", port=8000, public_url=public_url), job_base_url)
    assert json.loads(body)["result"]["videoUrl"].startswith(expected)
    assert "0.0.0.0" not in body


def test_progress_events_go_out_every_ten_points_of_each_attempt(tmp_path: Path) -> None:
    """A retried job's progress starts again at 0, and is told again; a job that ended is forgotten."""
    box = Outbox(tmp_path)
    try:
        hook = "http://127.0.0.1:9/hook"
        events = ["progress", "completed", "failed"]
        job_id = box.job(
            box.account(),
            hook,
            "progress",
            status=jobs.PROCESSING,
            error=None,
            attempts=1,
            webhook_events=events,
        )
        told = []
        for attempt, progress in [(1, 5), (1, 10), (1, 15), (1, 60), (1, 95), (2, 5), (2, 10), (2, 20)]:
            with box.db.session() as session:
                job = session.get_one(Job, job_id)
                job.attempts, job.progress = attempt, progress
                session.flush()
                before = session.scalar(select(func.count()).select_from(WebhookDelivery))
                box.sender.enqueue(session, job_id, "progress")
                session.flush()
                if session.scalar(select(func.count()).select_from(WebhookDelivery)) > before:
                    told.append((attempt, progress))
        assert told == [(1, 10), (1, 60), (1, 95), (2, 5), (2, 20)]
        with box.db.session() as session:
            session.get_one(Job, job_id).status = jobs.COMPLETED
            box.sender.enqueue(session, job_id, "completed")
        assert box.sender._last_progress == {}
    finally:
        box.db.dispose()


def test_a_completed_event_is_written_without_a_look_at_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It is written inside the transaction that completes the job: an object store that cannot be
    reached then must not undo the completion (and the render with it)."""
    box = Outbox(tmp_path)

    def unreachable(key: str) -> bool:
        raise ConnectionError("the object store cannot be reached")

    monkeypatch.setattr(box.presenter.storage, "exists", unreachable)
    body = json.loads(completed_payload(box))
    assert body["event"] == "completed" and body["result"]["videoUrl"] and body["creditCost"] == 5
