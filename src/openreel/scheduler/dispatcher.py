"""The dispatcher: a server thread that feeds the executor's workers and writes what their renders came to.

It claims the oldest queued job for each idle worker slot, leasing it, has it prepared on a thread of its
own (preparation.py: images read, render planned) and hands it over; then it turns the workers' events
into ledger transitions, a finished render's files committed to storage on a thread of its own too: a
slow read or upload (S3) must not hold up the other slots' jobs. While a worker answers,
its job's lease is renewed (leases.py, on a thread of its own); a lease that runs out (this server or
that worker is gone) is reaped by whichever server sees it first: re-queued, or failed with a refund
after ``max_attempts``. A worker that dies or overruns ``job_timeout_s`` is replaced, so no job is stuck
and the server never goes down with a render.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from openreel.domain.catalog import Catalog
from openreel.domain.rules import VideoSpec
from openreel.engine.part_files import encodes_under_way
from openreel.executors import make_executor
from openreel.executors import messages as m
from openreel.executors.base import EngineState, Executor
from openreel.ledger import deletions, jobs, servers
from openreel.ledger.db import Database
from openreel.ledger.tables import utcnow
from openreel.scheduler.eta import RenderTimes, Shape
from openreel.scheduler.leases import LeaseKeeper
from openreel.scheduler.preparation import Preparer
from openreel.scheduler.queue_moves import QueueMoves
from openreel.settings import Settings
from openreel.storage.base import Storage, StorageUnavailable
from openreel.storage.images import InputError
from openreel.storage.signing import Signer

log = logging.getLogger("openreel.dispatcher")

CLAIM_INTERVAL_S = 0.5
POLL_S = 0.1
# From claim to a worker (images read, render planned, a slot free), and from a render's outcome to its
# files in storage, well beyond storage's own timeouts: then the job is let go, to be tried again.
PREPARE_LIMIT_S = 300.0
FINISH_LIMIT_S = 600.0
# A job's progress goes to the ledger at most this often, the newest percent each time: every write is a
# transaction (four round trips on PostgreSQL), and a fast render reports each percent (the tiny engine:
# a hundred a second). Clients poll every second or two.
PROGRESS_WRITE_S = 0.5

# Called inside the transaction that changed the job: (session, job id, event).
JobEventHook = Callable[[Session, str, str], None]
# Called when a render finished: (model id, seconds per part of the render, the recipe's trace).
RenderedHook = Callable[[str, dict[str, float], dict[str, Any]], None]
# Called with the seconds each step of a job's way around its render took (PHASES).
PhaseHook = Callable[[str, float], None]
# submit to claim; claim to hand-off (images read, render planned); the worker's time beyond render and
# encode (the hand-off itself, messages, probe); moving the file into storage; writing COMPLETED.
PHASES = ("claim", "prepare", "worker", "commit", "status")


def unavailable(engine: EngineState) -> str:
    """Why a job fails while the engine cannot load."""
    return f"the {engine.name} engine is unavailable: {engine.error}"


def _unstage(prepared: Future[tuple[m.RenderTask, tuple[str, ...], VideoSpec]]) -> None:
    if prepared.exception() is None:
        for staged in prepared.result()[0].output_paths:
            Path(staged).unlink(missing_ok=True)


@dataclass
class Preparing:
    """A claimed job whose task is being prepared, or waits, prepared, for a slot."""

    seq: int
    job_id: str
    attempt: int
    raw_spec: Any  # as the ledger keeps it
    slot: str  # kept for it; another if this one went away meanwhile (its worker died)
    claimed: float
    # The task, each sample's key in storage, and the spec read.
    prepared: Future[tuple[m.RenderTask, tuple[str, ...], VideoSpec]] = field(default_factory=Future)


@dataclass
class Running:
    seq: int
    job_id: str
    model: str
    attempt: int
    # Per sample: where its worker writes the MP4, and its key in storage.
    staged: tuple[str, ...]
    keys: tuple[str, ...]
    deadline: float
    shape: Shape
    claimed: float
    handed: float
    reported: int = 0  # the newest percent its worker reported
    written: int = 0  # the percent last written to the ledger
    written_at: float = float("-inf")
    cancelled: bool = False  # its worker was told to stop


@dataclass
class Finishing:
    """A rendered job whose files are being committed to storage, on ``thread`` since ``since``."""

    running: Running
    thread: threading.Thread
    since: float


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        signer: Signer,
        catalog: Catalog,
        on_job_event: JobEventHook | None = None,
        on_rendered: RenderedHook | None = None,
        on_phase: PhaseHook | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.storage = storage
        self.preparer = Preparer(settings, storage, signer, catalog)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._on_job_event = on_job_event or (lambda _session, _job, _event: None)
        self._on_rendered = on_rendered or (lambda _model, _seconds, _trace: None)
        self._on_phase = on_phase or (lambda _phase, _seconds: None)
        self._executor = executor if executor is not None else make_executor(settings)
        self.render_times = RenderTimes()
        self.queue = QueueMoves()
        self._running: dict[int, Running] = {}
        self._preparing: dict[int, Preparing] = {}  # in the order claimed
        # Rendered jobs whose files are being committed (no worker answers for them; their leases hold).
        self._finishing: dict[int, Finishing] = {}
        self._seq = 0
        self._next_claim = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.leases = LeaseKeeper(
            db,
            storage,
            self.owner,
            settings.lease_ttl_s,
            settings.max_attempts,
            self.queue,
            on_job_event=self._on_job_event,
            on_change=self._wake.set,
            engine_failed=lambda: self._executor.engine.error is not None,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openreel-dispatcher", daemon=True)

    @property
    def engine(self) -> EngineState:
        return self._executor.engine

    def start(self) -> None:
        self._executor.start()
        self.leases.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        deadline = time.monotonic() + 10
        for finishing in list(self._finishing.values()):  # a file half-way into storage
            finishing.thread.join(max(0.0, deadline - time.monotonic()))
        self.leases.stop()
        self._executor.stop()
        if self._thread.is_alive():  # stuck (a database call in an outage): its jobs are its own still
            log.warning("the dispatcher did not stop within 10 s; what its jobs staged stays")
            return
        # Their leases lapse and another server renders them from the start: what they staged here is
        # nothing's, and no later start of this data dir need find it (other servers may run on it).
        for running in list(self._running.values()):
            self._clear(running)
        for preparing in list(self._preparing.values()):
            self._drop(preparing)

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Called after the ledger marked the job CANCELLED: stop the render at its next step."""
        with self._lock:
            stopping = [r for r in self._running.values() if r.job_id == job_id]
        for running in stopping:
            running.cancelled = True
            self._executor.cancel(running.seq)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("dispatcher tick failed")
                time.sleep(1)

    def _tick(self) -> None:
        for event in self._poll():
            try:
                self._handle(event)
            except Exception:
                # The job stays PROCESSING without a worker: its lease runs out and the reaper retries it.
                log.exception("handling %s failed; the job's lease will bring it back", event)
                running = self._running.get(event.seq)
                if running is not None:
                    self._clear(running)
        self._write_progress()
        self._collect_finished()
        self._let_go()
        self._hold()
        for running in list(self._running.values()):
            if time.monotonic() > running.deadline:
                self._executor.abort(running.seq)
                limit = self.settings.job_timeout_s * len(running.keys)
                self._finish_failed(running, f"generation timed out after {limit} s")
        self._hand_over()
        if self._wake.is_set() or time.monotonic() >= self._next_claim:
            self._wake.clear()
            self._next_claim = time.monotonic() + CLAIM_INTERVAL_S
            while not self._stop.is_set() and self._dispatch_next():
                self._hold()

    def _poll(self) -> list[m.TaskEvent]:
        """The workers' events. With no job running, a ``wake`` (a submission, a job prepared) ends the
        wait at once: the executor's own wait would hold a new job up to ``POLL_S``."""
        if self._running:
            return self._executor.poll(POLL_S)
        self._wake.wait(POLL_S)
        return self._executor.poll(0)

    def _hold(self) -> None:
        """Tell the lease keeper which leases to renew: the jobs whose workers answer, those being
        prepared, and those whose files are being committed."""
        alive = self._executor.responsive()
        held = [(r.job_id, r.attempt) for r in self._running.values() if r.seq in alive]
        held += [(p.job_id, p.attempt) for p in self._preparing.values()]
        held += [(f.running.job_id, f.running.attempt) for f in self._finishing.values()]
        self.leases.hold(held)

    def _let_go(self) -> None:
        """Abandon the jobs another dispatcher took; stop the renders of those that ended elsewhere (a
        cancel sent to another server, which cannot reach this one's workers) at their next step."""
        gone = self.leases.take_gone()
        for preparing in list(self._preparing.values()):
            if (preparing.job_id, preparing.attempt) in gone.lost:
                log.warning(
                    "job %s: lease lost to another dispatcher while it was prepared", preparing.job_id
                )
                self._drop(preparing)
            elif (preparing.job_id, preparing.attempt) in gone.ended:
                log.info("job %s ended through another server while it was prepared", preparing.job_id)
                self._drop(preparing)
        for running in list(self._running.values()):
            if (running.job_id, running.attempt) in gone.lost:
                log.warning("job %s: lease lost to another dispatcher; abandoning it here", running.job_id)
                self._executor.abort(running.seq)
                self._clear(running)
            elif (running.job_id, running.attempt) in gone.ended and not running.cancelled:
                log.info("job %s ended through another server; stopping its render", running.job_id)
                running.cancelled = True
                self._executor.cancel(running.seq)

    def _handle(self, event: m.TaskEvent) -> None:
        running = self._running.get(event.seq)
        if running is None:
            return
        if isinstance(event, m.Progress):
            running.reported = max(running.reported, event.percent)
        elif isinstance(event, m.Done):
            now = time.monotonic()
            self._on_phase("worker", max(now - running.handed - sum(event.seconds.values()), 0.0))
            self.render_times.observe(running.shape, now - running.claimed)
            made = sum("error" not in sample for sample in event.media["samples"])
            per_video = {part: seconds / made for part, seconds in event.seconds.items()}
            try:  # before the job reads COMPLETED, so whoever sees it completed sees its render counted
                self._on_rendered(running.model, per_video, event.media.get("recipe") or {})
            except Exception:
                log.exception("recording the render of job %s failed", running.job_id)
            self._finish(running, event.media)
        elif isinstance(event, m.Failed):
            self._finish_failed(running, event.error)
        elif isinstance(event, m.Cancelled):
            self._clear(running)
        elif isinstance(event, m.Lost):
            self._lost(running, event.reason)

    def _write_progress(self) -> None:
        """The running jobs' newest progress, for each whose last write is ``PROGRESS_WRITE_S`` old."""
        now = time.monotonic()
        for running in list(self._running.values()):
            if running.reported <= running.written or now - running.written_at < PROGRESS_WRITE_S:
                continue
            running.written_at = now
            try:
                with self.db.session() as session:
                    if jobs.set_progress(session, running.job_id, running.attempt, running.reported):
                        self._on_job_event(session, running.job_id, "progress")
                running.written = running.reported
            except Exception:
                log.exception("writing the progress of job %s failed", running.job_id)

    def _idle_slots(self) -> list[str]:
        """Idle slots not kept for a job being prepared; none while more renders than there are slots
        wait for their files to reach storage (a slow upload must not pile up renders)."""
        if len(self._finishing) > self._executor.engine.slots:
            return []
        kept = {p.slot for p in self._preparing.values()}
        return [slot for slot in self._executor.free_slots() if slot not in kept]

    def _dispatch_next(self) -> bool:
        """Claim the oldest queued job for an idle slot and start preparing it; with a failed engine, fail
        it with a refund, unless another server whose engine works shares the database: the queue is
        left to it."""
        engine = self._executor.engine
        idle = self._idle_slots()
        if not idle and engine.error is None:
            return False
        slot = idle[0] if idle else None
        if slot is None and self._others_render():
            return False
        with self.queue.moving(), self.db.session() as session:
            job = jobs.claim_next(session, self.owner, self.settings.lease_ttl_s, worker=slot)
            if job is None:
                return False
            job_id, attempt, raw_spec, created = job.id, job.attempts, job.spec, job.created_at
            self._on_job_event(session, job_id, "progress")
        self._on_phase("claim", max((utcnow() - created).total_seconds(), 0.0))
        if slot is None:
            self._fail(job_id, attempt, unavailable(engine))
            return True
        self._seq += 1  # only this thread numbers tasks
        preparing = Preparing(self._seq, job_id, attempt, raw_spec, slot, time.monotonic())
        self._preparing[preparing.seq] = preparing
        preparing.prepared.add_done_callback(lambda _: self._wake.set())
        # A daemon thread, not a pool's (which the interpreter joins at exit): a read that hangs must
        # never keep the server from stopping. Its job's lease is held meanwhile, and lapses if it stops.
        threading.Thread(
            target=self._prepare, args=(preparing, engine.grid_scale), name="openreel-prepare", daemon=True
        ).start()
        return True

    def _others_render(self) -> bool:
        with self.db.read() as session:
            return servers.others_render(session, self.owner, self.settings.lease_ttl_s)

    def _prepare(self, preparing: Preparing, grid_scale: float) -> None:
        """On the preparing thread."""
        try:
            spec = VideoSpec.from_json(preparing.raw_spec)
            task, keys = self.preparer.prepare(
                preparing.seq, preparing.job_id, preparing.attempt, spec, grid_scale
            )
        except Exception as exc:
            preparing.prepared.set_exception(exc)
        else:
            preparing.prepared.set_result((task, keys, spec))

    def _hand_over(self) -> None:
        """Give the prepared tasks to their slots, in the order their jobs were claimed, and fail those
        that could not be prepared. A task whose slot went away meanwhile takes another idle one, or waits."""
        for preparing in list(self._preparing.values()):
            job_id, attempt = preparing.job_id, preparing.attempt
            if time.monotonic() - preparing.claimed > PREPARE_LIMIT_S:
                # Its read hangs, or no slot has come free for it: another server may have one.
                self._drop(preparing)
                self._retry_or_fail(job_id, attempt, f"it was not started within {PREPARE_LIMIT_S:.0f} s")
                continue
            if not preparing.prepared.done():
                continue
            error = preparing.prepared.exception()
            if error is not None:
                del self._preparing[preparing.seq]
                if isinstance(error, InputError):
                    self._fail(job_id, attempt, str(error))
                elif isinstance(error, StorageUnavailable):
                    # The store's outage, not the job's data: left to its lease, whose lapse brings it
                    # back a lease later (failed, refunded, after its last attempt), not into the outage.
                    log.warning("job %s: its files could not be read (%s); left to its lease", job_id, error)
                else:
                    # One job's bad data must not wait for its lease: it fails now, refunded.
                    log.error("preparing job %s failed", job_id, exc_info=error)
                    self._fail(job_id, attempt, f"the job could not be prepared: {error}")
                continue
            if preparing.slot not in self._executor.free_slots():
                idle = self._idle_slots()
                engine = self._executor.engine
                if not idle and engine.error is None:
                    continue
                if not idle:
                    self._drop(preparing)
                    if self._others_render():  # theirs, as if never claimed here
                        with self.queue.moving(), self.db.session() as session:
                            jobs.requeue(session, job_id, attempt, spent=False)
                    else:
                        self._fail(job_id, attempt, unavailable(engine))
                    continue
                preparing.slot = idle[0]
            del self._preparing[preparing.seq]
            self._start(preparing)

    def _drop(self, preparing: Preparing) -> None:
        """Forget a claimed job whose render will not start here, and the files its preparation staged
        for the render: now, or once a preparation still under way ends."""
        del self._preparing[preparing.seq]
        preparing.prepared.add_done_callback(_unstage)

    def _start(self, preparing: Preparing) -> None:
        task, keys, spec = preparing.prepared.result()
        now = time.monotonic()
        running = Running(
            seq=task.seq,
            job_id=task.job_id,
            model=spec.model,
            attempt=preparing.attempt,
            staged=task.output_paths,
            keys=keys,
            deadline=now + self.settings.job_timeout_s * spec.sample_count,
            shape=Shape.of(spec),
            claimed=preparing.claimed,
            handed=now,
        )
        with self._lock:
            self._running[task.seq] = running
        self._on_phase("prepare", now - preparing.claimed)
        self._executor.submit(preparing.slot, task)
        with self.db.read() as session:
            # A cancel that came while the images were read found nothing to stop yet.
            if jobs.status_of(session, task.job_id) == jobs.CANCELLED:
                self._executor.cancel(task.seq)

    def _finish(self, running: Running, media: dict[str, Any]) -> None:
        """Commit the render on a thread of its own; its job is no longer one a worker runs."""
        with self._lock:
            del self._running[running.seq]
        thread = threading.Thread(
            target=self._finish_in_thread, args=(running, media), name="openreel-finish", daemon=True
        )
        self._finishing[running.seq] = Finishing(running, thread, time.monotonic())
        self._hold()
        thread.start()

    def _finish_in_thread(self, running: Running, media: dict[str, Any]) -> None:
        try:
            self._finish_done(running, media)
        except Exception:
            # The job stays PROCESSING: its lease runs out and the reaper retries it.
            log.exception("finishing job %s failed; the job's lease will bring it back", running.job_id)
            self._clear(running)
        finally:
            self._wake.set()

    def _collect_finished(self) -> None:
        for seq, finishing in list(self._finishing.items()):
            if not finishing.thread.is_alive():
                del self._finishing[seq]
            elif time.monotonic() - finishing.since > FINISH_LIMIT_S:
                # Its lease lapses and the job is tried again; a late write of this attempt changes nothing.
                job_id = finishing.running.job_id
                log.error("job %s: its files took over %.0f s to commit; let go", job_id, FINISH_LIMIT_S)
                del self._finishing[seq]

    def _finish_done(self, running: Running, media: dict[str, Any]) -> None:
        """The samples rendered move into storage; the job's result names each, and the first one made
        is also the result's own video (what a one-video client reads)."""
        started = time.monotonic()
        samples = [dict(sample) for sample in media["samples"]]
        made: list[dict[str, Any]] = []
        completed = settled = False  # the job's row took the result; its transaction ended without raising
        try:
            for sample, staged, key in zip(samples, running.staged, running.keys, strict=True):
                if "error" not in sample:
                    self.storage.commit(Path(staged), key)
                    sample["key"] = key
                    made.append(sample)
            stored = time.monotonic()
            self._on_phase("commit", stored - started)
            result = {
                **media,
                "key": made[0]["key"],
                "checkpoint": self.settings.checkpoint,
                "randomWeights": self.engine.random_weights,
                "samples": samples,
            }
            with self.db.session() as session:
                completed = jobs.complete(
                    session, running.job_id, running.attempt, result, failed_samples=len(samples) - len(made)
                )
                if completed:
                    self._on_job_event(session, running.job_id, "completed")
            settled = True
            self._on_phase("status", time.monotonic() - stored)
        finally:
            # A lost race, or a write that failed (the job is then retried): no job names them. A commit
            # that raised may have been applied all the same (the connection lost once the database had
            # it, or is still applying it): its videos are kept, as an object nothing names costs disk
            # and a COMPLETED job whose video is gone costs its client the clip.
            if completed and not settled:
                log.error(
                    "job %s: whether its completion was committed is unknown; its videos are kept",
                    running.job_id,
                )
            elif not (completed and settled):
                deletions.delete(self.db, self.storage, [sample["key"] for sample in made])
        self._clear(running)

    def _fail(self, job_id: str, attempt: int, error: str) -> None:
        with self.db.session() as session:
            if jobs.end_with_refund(session, job_id, jobs.FAILED, error, attempt=attempt):
                self._on_job_event(session, job_id, "failed")

    def _finish_failed(self, running: Running, error: str) -> None:
        self._fail(running.job_id, running.attempt, error)
        self._clear(running)

    def _clear(self, running: Running) -> None:
        for staged in map(Path, running.staged):
            for path in (staged, *encodes_under_way(staged)):
                path.unlink(missing_ok=True)
        with self._lock:
            self._running.pop(running.seq, None)

    def _lost(self, running: Running, reason: str) -> None:
        self._retry_or_fail(running.job_id, running.attempt, reason)
        self._clear(running)

    def _retry_or_fail(self, job_id: str, attempt: int, reason: str) -> None:
        if attempt < self.settings.max_attempts:
            with self.queue.moving(), self.db.session() as session:
                jobs.requeue(session, job_id, attempt)
            log.warning("job %s re-queued: %s", job_id, reason)
            self._wake.set()
        else:
            self._fail(job_id, attempt, f"{reason}; no attempts left")
