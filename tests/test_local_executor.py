"""The local executor's slots, in-process: each worker process stands in as a scripted one, so what a slot
does when its worker fails to load, dies, or cannot even be spawned is seen without loading an engine."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import SimpleNamespace

import pytest

from openreel.executors import local
from openreel.executors import messages as m
from openreel.executors.base import MAX_FAILED_STARTS, failure_backoff
from openreel.executors.local import LocalExecutor
from openreel.settings import Settings

READY = m.EngineReady("tiny", 0.25, True)


class ScriptedWorker:
    """Alive from ``start`` until the test kills it; sends what the test puts in ``outbox``. The next
    ``spawn_failures`` workers cannot be made, as none can with no file descriptors left (a real one's
    shared cancel flag needs one)."""

    made: list[ScriptedWorker] = []
    spawn_failures = 0

    def __init__(self, settings: Settings, device: str | None) -> None:
        if ScriptedWorker.spawn_failures:
            ScriptedWorker.spawn_failures -= 1
            raise OSError(24, "Too many open files")
        self.device = device
        self.alive = False
        self.connection: Connection | None = None
        self.outbox: list[m.Event] = []
        self.sent: list[m.RenderTask] = []
        self.pid = len(ScriptedWorker.made)
        ScriptedWorker.made.append(self)

    def start(self) -> None:
        self.connection, self._other_end = multiprocessing.Pipe()
        self.alive = True

    def events(self) -> list[m.Event]:
        sent, self.outbox = self.outbox, []
        return sent

    def send(self, task: m.RenderTask) -> None:
        self.sent.append(task)

    def cancel(self, seq: int) -> None:
        pass

    def stop(self) -> None:
        self.kill()

    def kill(self) -> None:
        self.alive = False
        if self.connection is not None:
            self.connection.close()
            self._other_end.close()
            self.connection = None


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ScriptedWorker]]:
    made: list[ScriptedWorker] = []
    monkeypatch.setattr(ScriptedWorker, "made", made)
    monkeypatch.setattr(ScriptedWorker, "spawn_failures", 0)
    monkeypatch.setattr(local, "LocalWorker", ScriptedWorker)
    yield made
    for worker in made:
        worker.kill()


def task(seq: int) -> m.RenderTask:
    return m.RenderTask(seq, f"job-{seq}", (), ())


def test_a_slot_whose_engine_fails_to_load_is_out_and_the_others_render(
    workers: list[ScriptedWorker],
) -> None:
    """One GPU out of memory takes its slot out, not the server; the last slot out fails the engine."""
    executor = LocalExecutor(Settings(workers=2))
    executor.start()
    workers[0].outbox.append(READY)
    workers[1].outbox.append(m.EngineFailed("OutOfMemoryError: CUDA out of memory (GPU 1)"))
    workers[1].alive = False  # a worker whose engine failed exits
    assert executor.poll(0) == []
    engine = executor.engine
    assert (engine.ready, engine.error, engine.slots) == (True, None, 1)
    [slot] = executor.free_slots()
    assert slot.endswith(":local-0:0") and len(workers) == 2  # the failed one is not restarted
    executor.submit(slot, task(7))
    assert workers[0].sent == [task(7)] and executor.free_slots() == []
    workers[0].alive = False  # killed mid-render
    assert executor.poll(0) == [m.Lost(7, "the worker process exited unexpectedly")]
    workers[2].outbox.append(m.EngineFailed("OutOfMemoryError: CUDA out of memory (GPU 0)"))
    assert executor.poll(0) == []
    engine = executor.engine
    assert (engine.ready, engine.error, engine.slots) == (
        False,
        "OutOfMemoryError: CUDA out of memory (GPU 0)",
        0,
    )
    assert len(workers) == 3 and not any(worker.alive for worker in workers)


def test_a_worker_that_cannot_be_spawned_is_tried_again_later_and_its_job_reported_lost(
    workers: list[ScriptedWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "SPAWN_RETRY_S", 0.2)
    executor = LocalExecutor(Settings(workers=1))
    executor.start()
    workers[0].outbox.append(READY)
    executor.poll(0)
    executor.submit(executor.free_slots()[0], task(3))
    ScriptedWorker.spawn_failures = 1
    workers[0].alive = False
    assert executor.poll(0) == [m.Lost(3, "the worker process exited unexpectedly")]
    executor.poll(0)
    assert len(workers) == 1  # its replacement could not be made, nor is it tried again at once
    time.sleep(0.2)
    executor.poll(0)
    assert workers[1].alive
    workers[1].outbox.append(READY)
    executor.poll(0)
    assert executor.engine.ready and executor.free_slots()
    monkeypatch.setattr(local, "SPAWN_RETRY_S", 0.0)
    ScriptedWorker.spawn_failures = MAX_FAILED_STARTS
    workers[1].alive = False
    for _ in range(MAX_FAILED_STARTS + 1):  # a restart, then a failed start counted at each poll
        executor.poll(0)
    error = executor.engine.error
    assert error == "its worker process cannot be started: [Errno 24] Too many open files"
    assert len(workers) == 2
    executor.poll(0)
    assert len(workers) == 2  # no more tries once the slot is out


def test_a_slot_out_of_service_loads_again_later_and_brings_the_engine_back(
    workers: list[ScriptedWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights pulled, or a GPU freed, after the engine failed: the slot tries again after a while, with
    a fresh count of failed starts, and the engine is ready once it loads, without a restart."""
    outages: list[int] = []
    monkeypatch.setattr(local, "failure_backoff", lambda failures: outages.append(failures) or 0.2)
    executor = LocalExecutor(Settings(workers=1))
    executor.start()
    missing = "WeightsMissing: run openreel models pull"
    workers[0].outbox.append(m.EngineFailed(missing))
    workers[0].alive = False
    executor.poll(0)
    assert (executor.engine.ready, executor.engine.error, executor.engine.slots) == (False, missing, 0)
    executor.poll(0)
    assert len(workers) == 1  # not at once
    time.sleep(0.2)
    executor.poll(0)
    assert len(workers) == 2 and workers[1].alive and executor.engine.slots == 1
    assert executor.engine.error == missing and not executor.free_slots()  # loading, not loaded
    for _ in range(MAX_FAILED_STARTS):  # it now dies while loading, each time
        workers[-1].alive = False
        executor.poll(0)
    assert executor.engine.error == local.DYING and len(workers) == 1 + MAX_FAILED_STARTS
    time.sleep(0.2)
    executor.poll(0)
    assert len(workers) == 2 + MAX_FAILED_STARTS
    workers[-1].outbox.append(READY)
    executor.poll(0)
    engine = executor.engine
    assert (engine.ready, engine.error, engine.slots) == (True, None, 1) and executor.free_slots()
    assert outages == [1, 2]  # the wait grows while the slot keeps failing
    workers[-1].alive = False
    executor.poll(0)
    workers[-1].outbox.append(m.EngineFailed(missing))
    executor.poll(0)
    assert outages == [1, 2, 1]  # and starts again once it has loaded


def test_a_worker_whose_load_hangs_is_stopped_at_the_limit_and_its_slot_taken_out(
    workers: list[ScriptedWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load that never ends (a stalled network mount) would leave the charged jobs queued for ever:
    past the limit the worker is stopped and its slot is out, and with none left the engine says why, so
    that they fail with a refund. The executor's clock is the test's."""
    now = [1000.0]
    monkeypatch.setattr(local, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=time.sleep))
    monkeypatch.setattr(local, "failure_backoff", lambda failures: 30.0)
    pair = LocalExecutor(Settings(workers=2, engine_load_timeout_s=60))
    alone = LocalExecutor(Settings(workers=1, engine_load_timeout_s=60))
    pair.start()
    alone.start()
    workers[0].outbox.append(READY)
    now[0] += 60
    pair.poll(0)
    alone.poll(0)
    assert all(worker.alive for worker in workers)  # at the limit, not past it
    now[0] += 1
    pair.poll(0)
    alone.poll(0)
    assert workers[0].alive and not workers[1].alive and not workers[2].alive  # a loaded one has no limit
    assert (pair.engine.ready, pair.engine.error, pair.engine.slots) == (True, None, 1)
    hung = "its worker did not load the engine within 60 s"
    assert (alone.engine.ready, alone.engine.error, alone.engine.slots) == (False, hung, 0)
    now[0] += 30
    pair.poll(0)
    now[0] += 59
    pair.poll(0)
    assert len(workers) == 4 and workers[3].alive  # tried again later, with a time of its own to load
    workers[3].outbox.append(READY)
    pair.poll(0)
    assert (pair.engine.ready, pair.engine.slots) == (True, 2)


def test_failed_engines_wait_longer_each_time_up_to_a_cap() -> None:
    assert [failure_backoff(n) for n in (1, 2, 3, 5, 6, 40)] == [30, 60, 120, 480, 900, 900]
    assert failure_backoff(2000) == 900  # a slot broken for weeks


def test_an_abort_after_stop_starts_no_worker(workers: list[ScriptedWorker]) -> None:
    """A job aborted while the server shuts down leaves its slot empty, not a fresh worker loading."""
    executor = LocalExecutor(Settings(workers=1))
    executor.start()
    workers[0].outbox.append(READY)
    executor.poll(0)
    executor.submit(executor.free_slots()[0], task(5))
    executor.stop()
    executor.abort(5)
    assert len(workers) == 1 and not workers[0].alive
