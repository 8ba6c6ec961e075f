"""The Ray executor: one actor per worker slot across a Ray cluster, each keeping its weights resident.

Nodes offer slots through the custom resource ``openreel_slot`` (``openreel worker`` starts a node
with one slot per GPU); the executor keeps one actor per slot in the cluster, so a node that joins
gets actors and one that leaves takes its actors with it. A task whose actor dies comes back as
``Lost`` and the dispatcher re-queues it. Workers on other machines send the finished MP4 back as
bytes; only the server writes storage and the ledger.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayError

from openreel.engine import EngineOptions, load_engine
from openreel.executors import messages as m
from openreel.executors.base import FAILURE_BACKOFF_S, MAX_FAILED_STARTS, EngineState
from openreel.executors.render import render_task
from openreel.executors.scratch import Scratch
from openreel.settings import Settings

if TYPE_CHECKING:
    from openreel.engine.base import VideoEngine

log = logging.getLogger("openreel.executor")

SLOT_RESOURCE = "openreel_slot"
SCALE_INTERVAL_S = 2.0
PROGRESS_INTERVAL_S = 1.0
# Enough threads for a render plus the progress and cancel calls that arrive while it runs.
ACTOR_THREADS = 4


def node_command(address: str, slots: int) -> list[str]:
    """``ray start`` joining ``address`` with ``slots`` render slots, in the foreground."""
    ray_cli = Path(sys.executable).with_name("ray")
    return [
        str(ray_cli) if ray_cli.exists() else "ray",
        "start",
        f"--address={address}",
        f"--resources={json.dumps({SLOT_RESOURCE: slots})}",
        "--block",
    ]


class RenderActor:
    """Runs on a worker node. Loading failures are reported, not raised, so the server can say why."""

    def __init__(self, options: EngineOptions, x264_preset: str) -> None:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        self._x264_preset = x264_preset
        self._progress: dict[int, int] = {}
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self._node = ray.get_runtime_context().get_node_id()
        self._engine: VideoEngine | None = None
        try:
            self._scratch = Scratch()
            # The node's own settings (its OPENREEL_DATA_DIR) say where weights are cached there; settings
            # this node cannot build fail the engine's load, reported to the server, like any other.
            cache_dir = Settings().data_dir.resolve() / "models"
            self._engine = load_engine(options, cache_dir=cache_dir)
            self._loaded: m.EngineReady | m.EngineFailed = m.EngineReady.of(self._engine)
        except Exception as exc:
            self._loaded = m.EngineFailed(f"{type(exc).__name__}: {exc}")

    def describe(self) -> tuple[str, m.EngineReady | m.EngineFailed]:
        return self._node, self._loaded

    def render(self, task: m.RenderTask) -> m.Outcome:
        engine = self._engine
        assert engine is not None, "the server only sends tasks to actors that loaded"
        with tempfile.TemporaryDirectory(dir=self._scratch.path) as tmp:
            outputs = [Path(tmp) / f"clip-{i}.mp4" for i in range(len(task.plans))]
            outcome = render_task(
                engine,
                task,
                outputs,
                x264_preset=self._x264_preset,
                report=lambda percent: self._progress.__setitem__(task.seq, percent),
                cancelled=lambda: task.seq in self._cancelled,
            )
            if isinstance(outcome, m.Done):
                videos = {i: path.read_bytes() for i, path in enumerate(outputs) if path.is_file()}
                outcome = replace(outcome, videos=videos)
        with self._lock:
            self._progress.pop(task.seq, None)
            self._cancelled.discard(task.seq)
        return outcome

    def progress(self, seq: int) -> int:
        return self._progress.get(seq, 0)

    def cancel(self, seq: int) -> None:
        with self._lock:
            self._cancelled.add(seq)


@dataclass
class _Actor:
    number: int
    handle: Any
    node_id: str = ""
    ready: bool = False
    seq: int | None = None
    outputs: tuple[str, ...] = ()
    progress_pending: bool = False
    heard: float = 0.0
    placed: float = 0.0

    @property
    def name(self) -> str:
        return f"ray:{self.node_id[:12]}:{self.number}"


class RayExecutor:
    """Driven by the dispatcher thread. ``_actors`` is replaced, never changed in place, so API
    threads reading ``engine`` or calling ``cancel`` always iterate a consistent snapshot."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._state = EngineState.configured(settings)
        self._actors: dict[int, _Actor] = {}
        self._refs: dict[Any, tuple[str, int, int | None]] = {}
        self._numbers = 0
        self._failed_starts = 0
        self._last_failure: str | None = None
        self._next_scale = 0.0
        self._next_progress = 0.0
        self._slotless_since: float | None = None

    @property
    def engine(self) -> EngineState:
        ready = [a for a in self._actors.values() if a.ready]
        return replace(
            self._state,
            ready=self._state.error is None and bool(ready),
            slots=len(ready),
            busy=sum(a.seq is not None for a in ready),
        )

    def start(self) -> None:
        s = self._settings
        if s.ray_address:
            ray.init(address=s.ray_address, namespace="openreel", log_to_driver=False)
        else:
            ray.init(
                address="local",
                namespace="openreel",
                include_dashboard=False,
                log_to_driver=False,
                resources={SLOT_RESOURCE: s.workers},
            )
        log.info("ray executor connected: %s", ray.cluster_resources())

    def stop(self) -> None:
        actors, self._actors = self._actors, {}
        for actor in actors.values():
            ray.kill(actor.handle)
        ray.shutdown()

    def free_slots(self) -> list[str]:
        if self._state.error is not None:
            return []
        return [a.name for a in self._actors.values() if a.ready and a.seq is None]

    def submit(self, slot: str, task: m.RenderTask) -> None:
        actor = next(a for a in self._actors.values() if a.name == slot)
        actor.seq, actor.outputs, actor.heard = task.seq, task.output_paths, time.monotonic()
        self._refs[actor.handle.render.remote(task)] = ("render", actor.number, task.seq)

    def cancel(self, seq: int) -> None:
        for actor in self._actors.values():
            if actor.seq == seq:
                actor.handle.cancel.remote(seq)

    def abort(self, seq: int) -> None:
        for actor in list(self._actors.values()):
            if actor.seq == seq:
                self._drop(actor)

    def responsive(self) -> set[int]:
        recent = time.monotonic() - self._settings.lease_ttl_s
        return {a.seq for a in self._actors.values() if a.seq is not None and a.heard >= recent}

    def poll(self, timeout: float) -> list[m.TaskEvent]:
        now = time.monotonic()
        self._check_load_times(now)
        if now >= self._next_scale:
            self._next_scale = now + SCALE_INTERVAL_S
            self._scale()
        if now >= self._next_progress:
            self._next_progress = now + PROGRESS_INTERVAL_S
            # Busy actors report progress; idle ones are pinged, so a dead one is dropped and replaced
            # before a job is sent to it.
            for actor in self._actors.values():
                if actor.ready and not actor.progress_pending:
                    actor.progress_pending = True
                    ref = actor.handle.progress.remote(-1 if actor.seq is None else actor.seq)
                    self._refs[ref] = ("progress", actor.number, actor.seq)
        if not self._refs:
            time.sleep(timeout)
            return []
        pending = list(self._refs)
        first, _ = ray.wait(pending, num_returns=1, timeout=timeout)
        if not first:
            return []
        done, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        events: list[m.TaskEvent] = []
        for ref in done:
            kind, number, seq = self._refs.pop(ref)
            if number not in self._actors:
                continue
            actor = self._actors[number]
            try:
                value = ray.get(ref)
            except RayError as exc:
                if actor.seq is not None:
                    reason = f"the worker on node {actor.node_id[:12]} died ({type(exc).__name__})"
                    events.append(m.Lost(actor.seq, reason))
                if not actor.ready:
                    self._failed(f"a ray worker died while loading ({type(exc).__name__})")
                self._drop(actor)
                continue
            actor.heard = time.monotonic()
            if kind == "describe":
                self._loaded(actor, *value)
            elif kind == "progress":
                actor.progress_pending = False
                if seq is not None and actor.seq == seq and value > 0:
                    events.append(m.Progress(seq, value))
            elif actor.seq == seq:
                actor.seq = None
                events.append(self._delivered(actor, value))
        self._judge_failures()
        return events

    def _check_load_times(self, now: float) -> None:
        """An actor whose load hangs (a stalled network file system, a driver that never answers) would
        keep its slot, and the jobs charged meanwhile, waiting for ever: past the limit it is dropped as
        a failed load, and another is placed after the usual wait."""
        limit = self._settings.engine_load_timeout_s
        for actor in list(self._actors.values()):
            if not actor.ready and now - actor.placed > limit:
                error = f"a ray worker did not load the engine within {limit} s"
                log.error("%s: %s", actor.name, error)
                self._failed(error)
                self._drop(actor)
        self._judge_failures()

    def _judge_failures(self) -> None:
        """The engine failed where loads keep failing and no actor is ready."""
        if self._failed_starts >= MAX_FAILED_STARTS and not any(a.ready for a in self._actors.values()):
            error = self._last_failure or "the ray workers keep dying while loading"
            self._state = replace(self._state, error=error)

    def _scale(self) -> None:
        """One actor per slot the cluster offers; new nodes get actors, dead ones have lost theirs. With
        the engine failed everywhere too (``FAILURE_BACKOFF_S`` apart): a node that joins, or weights
        pulled meanwhile, bring the cluster back."""
        resources = ray.cluster_resources()
        wanted = int(resources.get(SLOT_RESOURCE, 0))
        self._judge_slots(wanted)
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        actor_class = ray.remote(RenderActor)
        for _ in range(wanted - len(self._actors)):
            self._numbers += 1
            handle = actor_class.options(
                resources={SLOT_RESOURCE: 1},
                num_cpus=0,
                num_gpus=gpus,
                max_restarts=0,
                max_concurrency=ACTOR_THREADS,
            ).remote(self._settings.engine_options(), self._settings.x264_preset)
            self._actors = {
                **self._actors,
                self._numbers: _Actor(self._numbers, handle, placed=time.monotonic()),
            }
            # Ray types an actor handle's methods as plain callables; .remote is added at run time.
            self._refs[handle.describe.remote()] = ("describe", self._numbers, None)  # type: ignore[attr-defined]

    def _judge_slots(self, offered: int) -> None:
        """A cluster whose nodes offer no render slots (none joined, or all gone with their actors)
        would hold the jobs charged meanwhile for ever: past the load limit the engine fails (queued
        jobs are refunded, new ones refused) until a node with slots joins and an actor loads."""
        now = time.monotonic()
        if offered > 0 or any(actor.ready for actor in self._actors.values()):
            self._slotless_since = None
            return
        if self._slotless_since is None:
            self._slotless_since = now
        limit = self._settings.engine_load_timeout_s
        if now - self._slotless_since > limit and self._state.error is None:
            error = (
                f"the ray cluster has offered no render slots ({SLOT_RESOURCE}) for {limit} s: "
                "start `openreel worker` on a GPU node"
            )
            log.error(error)
            self._state = replace(self._state, error=error)

    def _loaded(self, actor: _Actor, node_id: str, loaded: m.EngineReady | m.EngineFailed) -> None:
        actor.node_id = node_id
        if isinstance(loaded, m.EngineFailed):
            log.error("engine %s failed to load on node %s: %s", self._state.name, node_id, loaded.error)
            self._failed(loaded.error)
            self._drop(actor)
            return
        actor.ready, self._failed_starts = True, 0
        self._state = self._state.loaded(loaded)
        log.info("%s: engine %s ready", actor.name, loaded.name)

    def _delivered(self, actor: _Actor, outcome: m.Outcome) -> m.TaskEvent:
        """The outcome, its videos written where the dispatcher expects them; a write that fails (the
        disk full) loses the render, which is tried again, and none of the other events polled with it."""
        if isinstance(outcome, m.Done) and outcome.videos is not None:
            try:
                for index, video in outcome.videos.items():
                    Path(actor.outputs[index]).write_bytes(video)
            except OSError as exc:
                log.exception("writing the videos of task %d failed", outcome.seq)
                return m.Lost(outcome.seq, f"its videos could not be written on the server: {exc}")
            return dataclasses.replace(outcome, videos=None)
        return outcome

    def _failed(self, error: str) -> None:
        """A load failed: count it, and wait before placing actors again (a bad node would spin). The
        wait does not grow: failures come one per actor, many at once on a large cluster."""
        self._failed_starts += 1
        self._last_failure = error
        self._next_scale = time.monotonic() + FAILURE_BACKOFF_S

    def _drop(self, actor: _Actor) -> None:
        self._actors = {n: a for n, a in self._actors.items() if n != actor.number}
        ray.kill(actor.handle, no_restart=True)
