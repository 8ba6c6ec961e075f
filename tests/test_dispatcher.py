"""The dispatcher's own loop, in-process against a fake executor: what it does with a job it cannot
prepare, without a worker process in the way."""

from __future__ import annotations

import logging
import queue as queues
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from openreel.domain.catalog import load_catalog
from openreel.executors import messages as m
from openreel.executors.base import EngineState
from openreel.ledger import credits, deletions, jobs, servers
from openreel.ledger.db import Database, migrate
from openreel.ledger.tables import Job, PendingDeletion, Server, utcnow
from openreel.scheduler import dispatcher as dispatcher_module
from openreel.scheduler import leases
from openreel.scheduler.dispatcher import Dispatcher
from openreel.scheduler.preparation import attempt_keys
from openreel.settings import Settings
from openreel.storage import make_storage
from openreel.storage.base import StorageUnavailable
from openreel.storage.signing import Signer

from support import SPEC, queued, until

LEASE_S = 1.5  # renewed every 0.5 s


def soon(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    until(condition, timeout, what, every=0.02)


class FakeExecutor:
    """``slots`` slots; a task handed to one keeps it (it never runs), and its worker answers while
    ``answering``."""

    def __init__(self, slots: int = 1) -> None:
        self.engine = EngineState(name="fake", ready=True, slots=slots)
        self.slots: dict[str, m.RenderTask | None] = {f"fake-{i}": None for i in range(slots)}
        self.submitted: list[m.RenderTask] = []
        self.aborted: list[int] = []
        self.cancelled: list[int] = []
        self.answering = True
        self.events: queues.SimpleQueue[m.TaskEvent] = queues.SimpleQueue()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def free_slots(self) -> list[str]:
        return [name for name, task in self.slots.items() if task is None]

    def submit(self, slot: str, task: m.RenderTask) -> None:
        assert self.slots[slot] is None, f"{slot} is busy"
        self.slots[slot] = task
        self.submitted.append(task)

    def poll(self, timeout: float) -> list[m.TaskEvent]:
        """The events sent since; a task's outcome frees its slot as it is read, as a worker's does."""
        time.sleep(timeout)
        events = []
        while not self.events.empty():
            event = self.events.get()
            if not isinstance(event, m.Progress):
                held = self.slots.items()
                self.slots = {name: None if task and task.seq == event.seq else task for name, task in held}
            events.append(event)
        return events

    def report(self, event: m.TaskEvent) -> None:
        """The outcome of a task its worker sends."""
        self.events.put(event)

    def responsive(self) -> set[int]:
        return {task.seq for task in self.submitted if self.answering}

    def cancel(self, seq: int) -> None:
        self.cancelled.append(seq)

    def abort(self, seq: int) -> None:
        self.aborted.append(seq)


@contextmanager
def dispatching(tmp_path: Path, slots: int = 1) -> Iterator[tuple[Dispatcher, FakeExecutor, Database]]:
    settings = Settings(data_dir=tmp_path, lease_ttl_s=LEASE_S)
    url = settings.resolved_database_url()
    migrate(url)
    db = Database(url)
    fake = FakeExecutor(slots)
    dispatcher = Dispatcher(
        settings, db, make_storage(settings), Signer(b"s"), load_catalog(None), executor=fake
    )
    try:
        yield dispatcher, fake, db
    finally:
        db.dispose()


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[tuple[Dispatcher, FakeExecutor, Database]]:
    with dispatching(tmp_path) as made:
        yield made


def dispatch(loop: Dispatcher) -> None:
    """What the dispatcher's loop does with the queue until it settles: claim a job for each idle slot,
    prepare it (on a thread of its own) and hand it over."""
    while loop._dispatch_next() or loop._preparing:
        for preparing in list(loop._preparing.values()):
            preparing.prepared.exception(timeout=30)
        loop._hand_over()


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"model": "veo-3.1-fast"}, "could not be prepared"),
        ({**SPEC, "image": "https://example.com/a.png"}, "not a file of this server"),
        ({**SPEC, "resolution": "4k"}, "could not be prepared"),
    ],
    ids=["unreadable spec", "remote image", "unplannable"],
)
def test_a_job_that_cannot_be_prepared_fails_at_once_with_a_refund(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], spec: dict[str, object], reason: str
) -> None:
    """It never waits for its lease to run out (nor reaches the network), and the next job goes on."""
    loop, fake, db = dispatcher
    bad, account = queued(db, spec)
    good, _ = queued(db, SPEC)
    dispatch(loop)
    with db.session() as session:
        failed = session.get(Job, bad)
        assert failed is not None and failed.status == jobs.FAILED
        assert failed.error is not None and reason in failed.error, failed.error
        assert credits.balance(session, account) == 10
    assert [task.job_id for task in fake.submitted] == [good]


def test_a_store_out_of_reach_while_a_job_is_prepared_leaves_it_to_its_lease(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the job's fault, unlike a file that is gone: the image may well be there a lease later, when
    a reaper takes the job back (the store is not asked again at once, in the middle of its outage)."""
    loop, fake, db = dispatcher
    image = Signer(b"s").url("http://127.0.0.1:8000", "uploads/a.png", 3600)
    job_id, account = queued(db, {**SPEC, "image": image})
    reads: list[str] = []

    def unreachable(key: str) -> bytes:
        reads.append(key)
        raise StorageUnavailable(f"reading {key} from S3: SlowDown")

    monkeypatch.setattr(loop.storage, "read_bytes", unreachable)
    dispatch(loop)
    assert reads == ["uploads/a.png"] and fake.submitted == [] and not loop._preparing
    assert status(db, job_id) == jobs.PROCESSING
    with db.session() as session:
        assert credits.balance(session, account) == 10 - 5
    time.sleep(LEASE_S + 0.1)  # the job is no longer this dispatcher's: its lease lapses
    assert reaped(db) == ([job_id], [])


def finish(loop: Dispatcher, done: m.Done) -> None:
    """What the dispatcher does with a render's outcome: its files committed, on a thread of their own."""
    loop._handle(done)
    for finishing in list(loop._finishing.values()):
        finishing.thread.join(30)


def _rendered(task: m.RenderTask, failed: set[int]) -> m.Done:
    """What a worker reports for ``task``, its samples written but those in ``failed``."""
    samples: list[dict[str, object]] = []
    for index, (plan, path) in enumerate(zip(task.plans, task.output_paths, strict=True)):
        if index in failed:
            samples.append({"seed": plan.seed, "error": "generation failed: out of memory"})
        else:
            Path(path).write_bytes(b"mp4")
            samples.append({"seed": plan.seed, "width": 1280, "height": 720, "fps": 24})
    made = next(sample for sample in samples if "error" not in sample)
    return m.Done(task.seq, {**made, "durationSeconds": 4.0, "hasAudio": False, "samples": samples})


def test_samples_that_fail_are_refunded_when_the_job_completes(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
) -> None:
    loop, fake, db = dispatcher
    job_id, account = queued(db, {**SPEC, "sample_count": 3, "seed": 2**32 - 1}, cost=9)
    dispatch(loop)
    [task] = fake.submitted
    assert [plan.seed for plan in task.plans] == [2**32 - 1, 0, 1] and len(set(task.output_paths)) == 3
    finish(loop, _rendered(task, failed={0}))
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == jobs.COMPLETED and job.result is not None
        assert credits.balance(session, account) == 10 - 9 + 3  # one sample's share back
        assert job.result["creditsRefunded"] == 3
        keys = [sample.get("key") for sample in job.result["samples"]]
        assert job.result["key"] == keys[1]  # the result's own video: the first one made
    assert keys == [None, f"results/{job_id}/1.1.mp4", f"results/{job_id}/1.2.mp4"]
    assert all(loop.storage.exists(key) for key in keys[1:])


def test_a_fast_renders_progress_is_written_at_most_twice_a_second_newest_first(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write is a transaction: a render reporting every percent writes its first report at once,
    then its newest at most every ``PROGRESS_WRITE_S``, and nothing it reported is left unwritten."""
    loop, fake, db = dispatcher
    job_id, account = queued(db, SPEC)
    dispatch(loop)
    [task] = fake.submitted
    now = [time.monotonic()]
    monkeypatch.setattr(dispatcher_module.time, "monotonic", lambda: now[0])
    written: list[int] = []
    set_progress = jobs.set_progress

    def recorded(session: Session, job: str, attempt: int, progress: int) -> bool:
        written.append(progress)
        return set_progress(session, job, attempt, progress)

    monkeypatch.setattr(jobs, "set_progress", recorded)

    def report(*percents: int) -> None:
        for percent in percents:
            fake.events.put(m.Progress(task.seq, percent))
        loop._tick()

    report(1, 2)
    report(3, 4, 5)
    now[0] += dispatcher_module.PROGRESS_WRITE_S / 2
    report(6)
    assert written == [2]
    now[0] += dispatcher_module.PROGRESS_WRITE_S / 2
    report()  # no report since, yet the newest goes in when its time comes
    assert written == [2, 6]
    now[0] += dispatcher_module.PROGRESS_WRITE_S
    report(4)  # older than what was written: nothing to write
    assert written == [2, 6]
    with db.read() as session:
        job = jobs.read_for_account(session, account, job_id)
        assert job is not None and job.progress == 6


def test_a_commit_that_fails_leaves_no_stored_sample(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job is left to its lease (and retried): no stored file may outlive that unnamed."""
    loop, fake, db = dispatcher
    job_id, _ = queued(db, {**SPEC, "sample_count": 2}, cost=6)
    dispatch(loop)
    [task] = fake.submitted
    commit = loop.storage.commit
    committed: list[str] = []

    def second_fails(staged: Path, key: str) -> None:
        if key.endswith(".1.mp4"):
            raise OSError("disk full")
        commit(staged, key)
        committed.append(key)

    monkeypatch.setattr(loop.storage, "commit", second_fails)
    with caplog.at_level(logging.ERROR, "openreel.dispatcher"):
        finish(loop, _rendered(task, failed=set()))
    assert "disk full" in caplog.text
    assert committed == [f"results/{job_id}/1.mp4"]  # the first was stored, then taken out again
    assert not loop.storage.exists(f"results/{job_id}/1.mp4")
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == jobs.PROCESSING


def test_a_finish_that_lost_to_a_cancel_deletes_every_sample_it_can(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No job names the stored samples of a lost race: one that cannot be deleted (the store out of
    reach) is logged and kept for the housekeeping's next try, and the others are deleted all the same."""
    loop, fake, db = dispatcher
    job_id, _ = queued(db, {**SPEC, "sample_count": 2}, cost=6)
    dispatch(loop)
    [task] = fake.submitted
    with db.session() as session:
        assert jobs.end_with_refund(session, job_id, jobs.CANCELLED, "Cancelled by the user")
    delete = loop.storage.delete

    def first_fails(key: str) -> None:
        if key.endswith(f"{job_id}/1.mp4"):
            raise OSError("store out of reach")
        delete(key)

    monkeypatch.setattr(loop.storage, "delete", first_fails)
    with caplog.at_level(logging.WARNING):
        finish(loop, _rendered(task, failed=set()))
    assert "store out of reach" in caplog.text
    assert loop.storage.exists(f"results/{job_id}/1.mp4")
    assert not loop.storage.exists(f"results/{job_id}/1.1.mp4")
    with db.session() as session:
        assert session.scalars(select(PendingDeletion.key)).all() == [f"results/{job_id}/1.mp4"]
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == jobs.CANCELLED


def test_a_completion_whose_commit_raised_keeps_its_videos(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], caplog: pytest.LogCaptureFixture
) -> None:
    """The connection lost once the database had the commit: the job is COMPLETED, and the videos its
    result names stay (a commit that raised is kept to, whatever became of it)."""
    loop, fake, db = dispatcher
    job_id, _ = queued(db, {**SPEC, "sample_count": 2}, cost=6)
    dispatch(loop)
    [task] = fake.submitted
    lost = OperationalError("COMMIT", None, Exception("server closed the connection unexpectedly"))

    def connection_lost(session: Session) -> None:
        if status(db, job_id) == jobs.COMPLETED:
            raise lost

    event.listen(db._sessions, "after_commit", connection_lost)
    try:
        with caplog.at_level(logging.ERROR, "openreel.dispatcher"):
            finish(loop, _rendered(task, failed=set()))
    finally:
        event.remove(db._sessions, "after_commit", connection_lost)
    assert "server closed the connection unexpectedly" in caplog.text
    assert "whether its completion was committed is unknown" in caplog.text
    assert status(db, job_id) == jobs.COMPLETED
    for key in attempt_keys(job_id, 1, 2):
        assert loop.storage.exists(key)


def test_leases_hold_while_the_dispatcher_is_busy_and_lapse_when_the_worker_stops_answering(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's lease is renewed on a thread of its own: while the dispatcher reads its images for longer
    than a lease lasts (a slow S3), and while its worker answers; not once the worker has gone silent."""
    loop, fake, db = dispatcher
    job_id, _ = queued(db, SPEC)
    read = blocked_preparer(loop, monkeypatch)
    loop.start()
    try:
        soon(lambda: loop._preparing, "the job being prepared")
        time.sleep(3 * LEASE_S)
        assert (
            reaped(db) == ([], []) and status(db, job_id) == jobs.PROCESSING
        )  # held while its images are read
        read.set()
        handed_over(fake, 1, "the job handed over")
        time.sleep(3 * LEASE_S)
        assert (
            reaped(db) == ([], []) and status(db, job_id) == jobs.PROCESSING
        )  # held while its worker answers
        fake.answering = False
        # The lease lapses and a reaper (this server's) re-queues the job.
        soon(lambda: status(db, job_id) == jobs.QUEUED, "the silent worker's job let go", 10 * LEASE_S)
    finally:
        loop.stop()


def test_a_job_another_server_took_is_abandoned_here(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
) -> None:
    loop, fake, db = dispatcher
    job_id, _ = queued(db, SPEC)
    loop.start()
    try:
        handed_over(fake, 1, "the job handed over")
        with db.session() as session:  # its lease ran out and another server claimed the job again
            job = session.get_one(Job, job_id)
            job.lease_owner, job.attempts = "another-server", job.attempts + 1
        soon(lambda: fake.aborted, "the job abandoned here", 10 * LEASE_S)
    finally:
        loop.stop()
    assert fake.aborted == [fake.submitted[0].seq]
    with db.read() as session:
        assert session.get_one(Job, job_id).lease_owner == "another-server"


def test_a_job_cancelled_through_another_server_stops_rendering_here(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
) -> None:
    """That server's API ends the job in the ledger, where this one's lease keeper finds it: the render
    stops at its next step, and the worker is kept."""
    loop, fake, db = dispatcher
    job_id, _ = queued(db, SPEC)
    loop.start()
    try:
        handed_over(fake, 1, "the job handed over")
        with db.session() as session:
            assert jobs.end_with_refund(session, job_id, jobs.CANCELLED, "Cancelled by the user")
        soon(lambda: fake.cancelled, "the render stopped here", 10 * LEASE_S)
        seq = fake.submitted[0].seq
        fake.report(m.Cancelled(seq))
        soon(lambda: not loop._running, "the slot given back", 10 * LEASE_S)
    finally:
        loop.stop()
    assert fake.cancelled == [seq] and not fake.aborted  # told once, however many rounds found it ended


def test_a_job_whose_images_are_slow_to_read_holds_up_no_other_slot(tmp_path: Path) -> None:
    with dispatching(tmp_path, slots=2) as (loop, fake, db):
        slow, _ = queued(db, {**SPEC, "prompt": "slow"})
        quick, _ = queued(db, SPEC)
        read = threading.Event()
        prepare = loop.preparer.prepare

        def slow_images(seq: int, job_id: str, *args: object) -> tuple[m.RenderTask, tuple[str, ...]]:
            if job_id == slow:
                read.wait(30)
            return prepare(seq, job_id, *args)  # type: ignore[arg-type]

        loop.preparer.prepare = slow_images  # type: ignore[method-assign]
        loop.start()
        try:
            handed_over(fake, 1, "the quick job, while the slow one is read")
            assert [task.job_id for task in fake.submitted] == [quick]
            read.set()
            handed_over(fake, 2, "the slow job handed over")
        finally:
            loop.stop()
        assert [task.job_id for task in fake.submitted] == [quick, slow]
        assert fake.free_slots() == []  # each on a slot of its own


def reaped(db: Database) -> tuple[list[str], list[str]]:
    """What another server's reaper takes now: (re-queued, failed)."""
    with db.session() as session:
        taken = jobs.reap_expired(session, max_attempts=3)
    return taken.requeued, taken.failed


def blocked_preparer(loop: Dispatcher, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Reading any job's images now waits until the event returned is set."""
    read = threading.Event()
    prepare = loop.preparer.prepare

    def slow_images(*args: object) -> tuple[m.RenderTask, tuple[str, ...]]:
        read.wait(30)
        return prepare(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(loop.preparer, "prepare", slow_images)
    return read


def taken_by_another_server(session: Session, job_id: str) -> None:
    """Its lease ran out and another server claimed the job again."""
    job = session.get_one(Job, job_id)
    job.lease_owner, job.attempts = "another-server", job.attempts + 1


def cancelled_through_another_server(session: Session, job_id: str) -> None:
    assert jobs.end_with_refund(session, job_id, jobs.CANCELLED, "Cancelled by the user")


@pytest.mark.parametrize("elsewhere", [taken_by_another_server, cancelled_through_another_server])
def test_a_job_taken_or_ended_elsewhere_while_it_was_prepared_is_not_started_and_gives_its_slot_back(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
    monkeypatch: pytest.MonkeyPatch,
    elsewhere: Callable[[Session, str], None],
) -> None:
    loop, fake, db = dispatcher
    job_id, _ = queued(db, SPEC)
    read = blocked_preparer(loop, monkeypatch)
    loop.start()
    try:
        soon(lambda: loop._preparing, "the job being prepared")
        with db.session() as session:
            elsewhere(session, job_id)
        soon(lambda: not loop._preparing, "the job let go here", 10 * LEASE_S)
        read.set()
        soon(lambda: not list(loop.settings.data_dir.rglob("*.part")), "what it staged removed")
        time.sleep(0.5)
    finally:
        loop.stop()
    assert fake.submitted == [] and fake.free_slots() == ["fake-0"]


def test_a_server_stopped_mid_job_leaves_nothing_it_staged(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server renders the job once its lease lapses; files staged here would be nothing's."""
    loop, fake, db = dispatcher
    queued(db, SPEC)
    queued(db, SPEC)
    loop.start()
    try:
        handed_over(fake, 1, "the first job handed over")
        read = blocked_preparer(loop, monkeypatch)
        fake.slots["fake-1"] = None  # a second slot, for a job whose preparation stays under way
        loop.wake()
        soon(lambda: loop._preparing, "the second job being prepared")
        staged = list(loop.settings.data_dir.rglob("*.part"))
        assert staged, "the first job's outputs staged"
    finally:
        loop.stop()
    read.set()
    soon(lambda: not list(loop.settings.data_dir.rglob("*.part")), "what was staged removed")


def test_a_job_that_takes_too_long_to_prepare_is_tried_again_then_failed_with_a_refund(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    loop, fake, db = dispatcher
    job_id, account = queued(db, SPEC)
    monkeypatch.setattr(dispatcher_module, "PREPARE_LIMIT_S", 0.2)
    read = blocked_preparer(loop, monkeypatch)
    loop.start()
    try:
        soon(lambda: status(db, job_id) == jobs.FAILED, "the job failed after its attempts")
    finally:
        read.set()
        loop.stop()
    with db.read() as session:
        job = session.get_one(Job, job_id)
    assert job.attempts == loop.settings.max_attempts and fake.submitted == []
    assert job.error is not None and "was not started within 0 s; no attempts left" in job.error
    with db.read() as session:
        assert credits.balance(session, account) == 10
    # What each late preparation staged for a render that never started.
    soon(lambda: not list(loop.settings.data_dir.rglob("*.part")), "the staged files removed")


@pytest.mark.parametrize(
    ("engine_fails", "others_render"),
    [(False, False), (True, False), (True, True)],
    ids=["worker replaced", "engine failed", "engine failed beside a working server"],
)
def test_a_job_whose_slot_went_away_while_it_was_prepared_takes_another_fails_or_goes_back(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
    monkeypatch: pytest.MonkeyPatch,
    engine_fails: bool,
    others_render: bool,
) -> None:
    loop, fake, db = dispatcher
    job_id, account = queued(db, SPEC)
    read = blocked_preparer(loop, monkeypatch)
    assert loop._dispatch_next()
    if engine_fails:
        fake.slots = {}
        fake.engine = replace(fake.engine, error="out of memory")
    else:  # its worker died and was replaced: the slot has a new name
        fake.slots = {"fake-0-again": None}
    if others_render:
        with db.session() as session:
            servers.report(session, "another-server", engine_failed=False)
    read.set()
    dispatch(loop)
    with db.read() as session:
        job = session.get_one(Job, job_id)
        balance = credits.balance(session, account)
    staged = list(loop.settings.data_dir.rglob("*.part"))
    assert len(staged) == (0 if engine_fails else 1)  # the render's own, until it ends
    if others_render:  # back in the queue for the other server, its attempt not spent
        assert job.status == jobs.QUEUED and job.attempts == 0 and balance == 10 - 5 and fake.submitted == []
    elif engine_fails:
        assert job.status == jobs.FAILED and job.error is not None and "out of memory" in job.error
        assert balance == 10 and fake.submitted == []
    else:
        assert job.status == jobs.PROCESSING and fake.slots["fake-0-again"] is fake.submitted[0]


def reported(db: Database) -> dict[str, bool]:
    """Each server's last report: whether its engine failed."""
    with db.read() as session:
        return {server.owner: server.engine_failed for server in session.scalars(select(Server))}


def test_a_server_whose_engine_failed_leaves_the_queue_to_one_whose_engine_works(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
) -> None:
    """Servers sharing a database report themselves every lease round: the queue waits for one whose
    engine works, and is failed (refunded) only when none has reported for a lease's time."""
    loop, fake, db = dispatcher
    job_id, account = queued(db, SPEC)
    fake.slots, fake.engine = {}, replace(fake.engine, error="out of memory")
    loop.leases.keep()
    with db.session() as session:
        servers.report(session, "another-server", engine_failed=False)
    assert reported(db) == {loop.owner: True, "another-server": False}
    assert not loop._dispatch_next()
    with db.read() as session:
        assert session.get_one(Job, job_id).status == jobs.QUEUED
    with db.session() as session:  # its report is now older than a lease
        session.get_one(Server, "another-server").seen_at = utcnow() - timedelta(seconds=2 * LEASE_S)
    assert loop._dispatch_next()
    with db.read() as session:
        job = session.get_one(Job, job_id)
        assert job.status == jobs.FAILED and job.error is not None and "out of memory" in job.error
        assert credits.balance(session, account) == 10


def test_the_videos_a_killed_server_stored_before_completing_its_job_go_when_the_job_is_reaped(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
) -> None:
    """Killed between storing a job's videos and completing it: the reaper that takes the job back
    removes them (the attempt that takes over stores its own), and only them."""
    loop, _fake, db = dispatcher
    job_id, _ = queued(db, {**SPEC, "sample_count": 2})
    other_id, _ = queued(db, {**SPEC, "prompt": "another"})
    with db.session() as session:
        assert jobs.claim_next(session, "killed", LEASE_S) is not None
        assert jobs.claim_next(session, "alive", 60) is not None
    stored = attempt_keys(job_id, 1, 2)
    kept = (*attempt_keys(job_id, 2, 1), *attempt_keys(other_id, 1, 1))
    for key in (*stored, *kept):
        staged = loop.storage.staging_path(key)
        staged.write_bytes(b"an mp4")
        loop.storage.commit(staged, key)
    with db.session() as session:
        session.get_one(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    loop.leases.keep()
    assert status(db, job_id) == jobs.QUEUED
    soon(lambda: not any(map(loop.storage.exists, stored)), "the killed attempt's videos removed")
    assert all(map(loop.storage.exists, kept))


def test_a_reaper_that_dies_before_the_store_answers_leaves_the_videos_to_the_sweep(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reaped attempt's names are written down in the transaction that takes the job back."""
    loop, _fake, db = dispatcher
    job_id, _ = queued(db, {**SPEC, "sample_count": 2})
    with db.session() as session:
        assert jobs.claim_next(session, "killed", LEASE_S) is not None
    stored = attempt_keys(job_id, 1, 2)
    for key in stored:
        staged = loop.storage.staging_path(key)
        staged.write_bytes(b"an mp4")
        loop.storage.commit(staged, key)
    with db.session() as session:
        session.get_one(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    monkeypatch.setattr(deletions, "delete", lambda *args: None)  # the server gone before it asked
    loop.leases.keep()
    assert status(db, job_id) == jobs.QUEUED and all(map(loop.storage.exists, stored))
    with db.session() as session:
        assert sorted(session.scalars(select(PendingDeletion.key))) == sorted(stored)
        session.execute(update(PendingDeletion).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    assert deletions.sweep(db, loop.storage) == 2
    assert not any(map(loop.storage.exists, stored))


def test_a_render_whose_worker_died_mid_encode_leaves_no_file(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database],
) -> None:
    """The worker was writing the MP4 into a hidden sibling of the staged file when it was killed."""
    loop, fake, db = dispatcher
    queued(db, SPEC)
    loop.start()
    try:
        handed_over(fake, 1, "the job handed over")
        [staged] = map(Path, fake.submitted[0].output_paths)
        encoding = staged.with_name(f".{staged.name}.k2j4.part")
        encoding.write_bytes(b"half an mp4")
        fake.report(m.Lost(fake.submitted[0].seq, "the worker process exited unexpectedly"))
        handed_over(fake, 2, "the job tried again")
    finally:
        loop.stop()
    assert not staged.exists() and not encoding.exists()


def test_a_stuck_dispatchers_jobs_are_let_go(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease keeper renews what the dispatcher last said to hold, but not forever; nor does it
    report the server as one whose engine works meanwhile."""
    loop, _fake, db = dispatcher
    job_id, _ = queued(db, SPEC)
    with db.session() as session:
        claimed = jobs.claim_next(session, loop.owner, LEASE_S)
        assert claimed is not None and claimed.id == job_id
    monkeypatch.setattr(leases, "STALE_AFTER_S", 4 * LEASE_S)
    loop.leases.hold([(job_id, 1)])  # and then the dispatcher says nothing more
    loop.leases.start()
    try:
        time.sleep(2 * LEASE_S)
        assert reaped(db) == ([], [])  # renewed so far
        assert reported(db) == {loop.owner: False}
        soon(lambda: status(db, job_id) == jobs.QUEUED, "the stuck dispatcher's job let go")
        soon(lambda: reported(db) == {loop.owner: True}, "the stuck server reported as not rendering")
    finally:
        loop.leases.stop()
    with db.read() as session:
        assert session.get_one(Job, job_id).attempts == 1


def hung_upload(loop: Dispatcher, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Committing any file to storage now waits until the second event returned is set; the first is set
    once one has begun."""
    uploading, uploaded = threading.Event(), threading.Event()
    commit = loop.storage.commit

    def slow_upload(staged: Path, key: str) -> None:
        uploading.set()
        uploaded.wait(30)
        commit(staged, key)

    monkeypatch.setattr(loop.storage, "commit", slow_upload)
    return uploading, uploaded


def status(db: Database, job_id: str) -> str:
    with db.read() as session:
        return session.get_one(Job, job_id).status


def handed_over(fake: FakeExecutor, count: int, what: str) -> None:
    soon(lambda: len(fake.submitted) >= count, what)


def first_upload_hangs(fake: FakeExecutor, uploading: threading.Event) -> None:
    """The first job handed over and rendered; its file's upload (``hung_upload``) under way."""
    handed_over(fake, 1, "the job handed over")
    fake.report(_rendered(fake.submitted[0], failed=set()))
    assert uploading.wait(30)


def test_a_slow_upload_holds_up_no_other_job_until_more_wait_than_there_are_slots(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    loop, fake, db = dispatcher
    made = [queued(db, {**SPEC, "prompt": str(i)})[0] for i in range(3)]
    uploading, uploaded = hung_upload(loop, monkeypatch)
    loop.start()
    try:
        first_upload_hangs(fake, uploading)
        handed_over(fake, 2, "the next job, while the upload hangs")
        assert fake.submitted[1].job_id == made[1] and status(db, made[0]) == jobs.PROCESSING
        fake.report(_rendered(fake.submitted[1], failed=set()))
        time.sleep(1)  # two renders wait for storage, on one slot: no third is started meanwhile
        assert len(fake.submitted) == 2 and status(db, made[2]) == jobs.QUEUED
        uploaded.set()
        handed_over(fake, 3, "the third job started")
        soon(
            lambda: {status(db, job_id) for job_id in made[:2]} == {jobs.COMPLETED},
            "the uploads' jobs completed",
        )
    finally:
        uploaded.set()
        loop.stop()


def test_a_render_whose_upload_hangs_is_let_go_and_tried_again(
    dispatcher: tuple[Dispatcher, FakeExecutor, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lease lapses and the job runs again; the late upload of the first attempt names nothing."""
    loop, fake, db = dispatcher
    job_id, _ = queued(db, SPEC)
    monkeypatch.setattr(dispatcher_module, "FINISH_LIMIT_S", 0.2)
    uploading, uploaded = hung_upload(loop, monkeypatch)
    loop.start()
    try:
        first_upload_hangs(fake, uploading)
        handed_over(fake, 2, "the job tried again")
        assert fake.submitted[1].job_id == job_id
        uploaded.set()
        time.sleep(0.5)
    finally:
        uploaded.set()
        loop.stop()
    with db.read() as session:
        job = session.get_one(Job, job_id)
    assert (job.status, job.attempts) == (jobs.PROCESSING, 2)
    assert not loop.storage.exists(f"results/{job_id}/1.mp4")
