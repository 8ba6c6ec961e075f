"""The default executor: worker processes on this machine, one per GPU (``OPENREEL_WORKERS``).

A worker whose engine fails to load (its GPU out of memory, say), or that keeps dying while it loads, takes
its slot out of service, to be tried again later (``failure_backoff``); the others go on rendering. The
engine is failed (jobs refused, and refunded if queued) only while every slot is out."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import socket
import time
from ctypes import c_longlong
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from openreel.executors import messages as m
from openreel.executors.base import MAX_FAILED_STARTS, EngineState, failure_backoff
from openreel.executors.worker import run_worker
from openreel.settings import Settings

log = logging.getLogger("openreel.executor")

DYING = "the worker keeps dying while loading"
SPAWN_RETRY_S = 5.0  # a worker process that could not be started at all is tried again this much later


class LocalWorker:
    """A handle on one spawned worker process."""

    def __init__(self, settings: Settings, device: str | None) -> None:
        self._settings = settings
        self._device = device
        self._ctx = mp.get_context("spawn")
        # No lock: one writer (this process), one reader; a lock's semaphore outlived every worker and
        # made multiprocessing warn of a leak at each shutdown.
        self._cancel: c_longlong = self._ctx.Value("q", -1, lock=False)
        self.connection: Connection | None = None
        self._process: BaseProcess | None = None

    def start(self) -> None:
        parent, child = self._ctx.Pipe()
        s = self._settings
        self._process = self._ctx.Process(
            target=run_worker,
            args=(
                s.engine_options(),
                str(s.data_dir / "models"),
                s.x264_preset,
                self._device,
                child,
                self._cancel,
            ),
            name="openreel-worker",
            daemon=True,
        )
        self._process.start()
        child.close()
        self.connection = parent

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def events(self) -> list[m.Event]:
        """Everything the worker has sent so far; a closed pipe (dead worker) ends the list."""
        received: list[m.Event] = []
        with contextlib.suppress(EOFError, OSError):
            while self.connection is not None and self.connection.poll(0):
                received.append(self.connection.recv())
        return received

    def send(self, task: m.RenderTask) -> None:
        assert self.connection is not None
        self.connection.send(task)

    def cancel(self, seq: int) -> None:
        self._cancel.value = seq

    def stop(self, timeout: float = 5.0) -> None:
        if self._process is None:
            return
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.send(None)
        self._process.join(timeout)
        self.kill()

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class _Slot:
    number: int
    device: str | None
    worker: LocalWorker
    ready: bool = False
    seq: int | None = None
    failed_starts: int = 0
    error: str | None = None  # why this slot is out of service
    retry_at: float = 0.0  # when a slot out of service starts a worker again (monotonic)
    outages: int = 0  # times in a row it was taken out of service
    failure: str = DYING  # what its failed starts were, should they take it out
    spawn_at: float = 0.0  # no worker is started in it before then (monotonic), after one could not be
    loading_since: float = 0.0  # when its worker was started (monotonic): it has until the load limit

    @property
    def name(self) -> str:
        """Host, slot and process: what an operator needs to find the worker that ran a job."""
        return f"{socket.gethostname()}:local-{self.number}:{self.worker.pid}"


class LocalExecutor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        count = settings.workers
        # Several workers share out the GPUs this server may use (its CUDA_VISIBLE_DEVICES, or all).
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        self._slots = [
            _Slot(i, device, LocalWorker(settings, device))
            for i in range(count)
            for device in [(visible[i % len(visible)] if visible else str(i)) if count > 1 else None]
        ]
        self._state = EngineState.configured(settings)
        self._stopping = False

    @property
    def engine(self) -> EngineState:
        return replace(
            self._state,
            ready=self._state.error is None and any(s.ready for s in self._slots),
            slots=sum(s.error is None for s in self._slots),
            busy=sum(s.seq is not None for s in self._slots),
        )

    def start(self) -> None:
        for slot in self._slots:
            slot.worker.start()
            slot.loading_since = time.monotonic()

    def stop(self) -> None:
        self._stopping = True
        for slot in self._slots:
            slot.worker.stop()

    def free_slots(self) -> list[str]:
        return [s.name for s in self._slots if s.ready and s.seq is None]

    def submit(self, slot: str, task: m.RenderTask) -> None:
        chosen = next(s for s in self._slots if s.name == slot)
        chosen.seq = task.seq
        chosen.worker.send(task)

    def cancel(self, seq: int) -> None:
        for slot in self._slots:
            if slot.seq == seq:
                slot.worker.cancel(seq)

    def abort(self, seq: int) -> None:
        for slot in self._slots:
            if slot.seq == seq:
                slot.seq = None
                if self._stopping:  # its worker is being stopped already, and none takes its place
                    slot.worker.kill()
                else:
                    self._restart(slot)

    def responsive(self) -> set[int]:
        return {s.seq for s in self._slots if s.seq is not None and s.worker.alive}

    def poll(self, timeout: float) -> list[m.TaskEvent]:
        connections = [s.worker.connection for s in self._slots if s.worker.connection and s.worker.alive]
        if connections:
            wait(connections, timeout)
        else:
            time.sleep(timeout)
        events: list[m.TaskEvent] = []
        for slot in self._slots:
            for event in slot.worker.events():
                if isinstance(event, m.EngineReady):
                    self._loaded(slot, event)
                elif isinstance(event, m.EngineFailed):
                    self._out_of_service(slot, event.error)
                elif event.seq == slot.seq:
                    if not isinstance(event, m.Progress):
                        slot.seq = None
                    events.append(event)
            if slot.worker.alive:
                self._check_load_time(slot)
                continue
            if slot.seq is not None:
                events.append(m.Lost(slot.seq, "the worker process exited unexpectedly"))
                slot.seq = None
            if self._stopping or slot.error is not None:
                slot.worker.kill()  # closes its pipe, so poll stops waking up for it
                if not self._stopping and time.monotonic() >= slot.retry_at:
                    self._back_in_service(slot)
                continue
            self._restart(slot)
        return events

    def _loaded(self, slot: _Slot, event: m.EngineReady) -> None:
        slot.ready, slot.failed_starts, slot.outages = True, 0, 0
        self._state = self._state.loaded(event)
        log.info(
            "%s: engine %s ready%s",
            slot.name,
            event.name,
            " (random weights: output is noise)" if event.random_weights else "",
        )

    def _check_load_time(self, slot: _Slot) -> None:
        """A worker whose load hangs (a stalled network file system, a driver that never answers) would
        keep its slot, and the jobs charged meanwhile, waiting for ever: past the limit it is stopped,
        and its slot is out of service as after a failed load."""
        limit = self._settings.engine_load_timeout_s
        if not slot.ready and slot.error is None and time.monotonic() - slot.loading_since > limit:
            self._out_of_service(slot, f"its worker did not load the engine within {limit} s")

    def _out_of_service(self, slot: _Slot, error: str) -> None:
        slot.ready, slot.error, slot.outages = False, error, slot.outages + 1
        delay = failure_backoff(slot.outages)
        slot.retry_at = time.monotonic() + delay
        slot.worker.kill()
        name = self._state.name
        log.error("%s: out of service (engine %s), tried again in %.0f s: %s", slot.name, name, delay, error)
        if all(s.error is not None for s in self._slots):
            self._state = replace(self._state, error=error)

    def _back_in_service(self, slot: _Slot) -> None:
        """A slot out of service loads its engine again, with its own count of failed starts."""
        log.info("%s: starting a worker again after: %s", slot.name, slot.error)
        slot.error, slot.failed_starts = None, 0
        self._spawn(slot)

    def _restart(self, slot: _Slot) -> None:
        """A new worker in the slot, unless its workers keep failing to start."""
        if time.monotonic() < slot.spawn_at:
            return
        if not slot.ready:
            slot.failed_starts += 1
        if slot.failed_starts >= MAX_FAILED_STARTS:
            self._out_of_service(slot, slot.failure)
            return
        self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        """A new worker in the slot; one that cannot even be spawned (no processes or file descriptors
        left) counts as a failed start, and is tried again ``SPAWN_RETRY_S`` later."""
        slot.ready = False
        slot.worker.kill()
        try:
            slot.worker = LocalWorker(self._settings, slot.device)
            slot.worker.start()
            slot.loading_since = time.monotonic()
        except OSError as exc:
            log.exception("%s: starting a worker failed", slot.name)
            slot.failure = f"its worker process cannot be started: {exc}"
            slot.spawn_at = time.monotonic() + SPAWN_RETRY_S
        else:
            slot.failure = DYING
