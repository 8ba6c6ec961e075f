"""The Ray executor's bookkeeping, in-process against a stand-in for Ray's API: what it does when every
actor fails to load and a node that can load joins later, and when a finished video cannot be written.
tests/test_ray.py runs the real cluster."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from openreel.executors import messages as m
from openreel.executors import ray_cluster
from openreel.executors.base import MAX_FAILED_STARTS
from openreel.executors.ray_cluster import SLOT_RESOURCE, RayExecutor
from openreel.settings import Settings

READY = m.EngineReady("tiny", 0.25, True)
HANGS = object()  # a load that never answers


class Ref:
    def __init__(self, value: Any) -> None:
        self.value = value


class Method:
    def __init__(self, answer: Callable[..., Any]) -> None:
        self._answer = answer

    def remote(self, *args: Any) -> Ref:
        return Ref(self._answer(*args))


class Handle:
    """An actor on a node of its own: loaded as the fake said when it was placed, and rendering as the
    fake says when asked."""

    def __init__(self, fake: FakeRay) -> None:
        loaded = fake.loads
        self.describe = Method(lambda: HANGS if loaded is HANGS else ("node-" + hex(id(self)), loaded))
        self.render = Method(lambda task: fake.rendered(task))
        self.progress = Method(lambda seq: 0)
        self.cancel = Method(lambda seq: None)


class FakeRay:
    """``slots`` slots; each actor placed loads as ``loads`` says at the time (the test changes it), and
    every call but a hung load's has answered by the next ``wait``."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.loads: m.EngineReady | m.EngineFailed | object = READY
        self.rendered: Callable[[m.RenderTask], m.Outcome] = lambda task: m.Done(task.seq)
        self.placed: list[Handle] = []
        self.killed: list[Handle] = []

    def cluster_resources(self) -> dict[str, float]:
        return {SLOT_RESOURCE: self.slots}

    def remote(self, cls: type) -> Placer:
        return Placer(self)

    def get(self, ref: Ref) -> Any:
        return ref.value

    def wait(self, refs: list[Ref], num_returns: int, timeout: float) -> tuple[list[Ref], list[Ref]]:
        return [ref for ref in refs if ref.value is not HANGS], [ref for ref in refs if ref.value is HANGS]

    def kill(self, handle: Handle, no_restart: bool = True) -> None:
        self.killed.append(handle)


class Placer:
    def __init__(self, fake: FakeRay) -> None:
        self.fake = fake

    def options(self, **options: Any) -> Placer:
        return self

    def remote(self, *args: Any) -> Handle:
        handle = Handle(self.fake)
        self.fake.placed.append(handle)
        return handle


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    """Ray as the executor sees it, placing an actor at every poll that finds a slot without one."""
    made = FakeRay(slots=1)
    monkeypatch.setattr(ray_cluster, "ray", made)
    monkeypatch.setattr(ray_cluster, "FAILURE_BACKOFF_S", 0.0)
    monkeypatch.setattr(ray_cluster, "SCALE_INTERVAL_S", 0.0)
    return made


def test_a_cluster_whose_engine_failed_everywhere_comes_back_when_a_node_can_load(fake: FakeRay) -> None:
    executor = RayExecutor(Settings(executor="ray"))
    fake.loads = m.EngineFailed("WeightsMissing: run openreel models pull")
    for _ in range(MAX_FAILED_STARTS):
        assert executor.poll(0) == []  # an actor placed, its load failed, the actor dropped
    assert executor.engine.error == "WeightsMissing: run openreel models pull"
    assert not executor.engine.ready and executor.free_slots() == []
    fake.loads = READY  # the weights pulled on the node, or a node that has them joined
    executor.poll(0)
    engine = executor.engine
    assert (engine.ready, engine.error, engine.slots) == (True, None, 1)
    assert len(fake.killed) == MAX_FAILED_STARTS and len(fake.placed) == MAX_FAILED_STARTS + 1


def test_videos_that_cannot_be_written_lose_their_render_and_nothing_else(
    fake: FakeRay, tmp_path: Path
) -> None:
    fake.slots = 2
    executor = RayExecutor(Settings(executor="ray"))
    executor.poll(0)
    slots = executor.free_slots()
    assert len(slots) == 2
    fake.rendered = lambda task: m.Done(task.seq, videos={0: b"an mp4"})
    unwritable = str(tmp_path / "gone" / "a.mp4")  # its folder does not exist
    executor.submit(slots[0], m.RenderTask(1, "j1", (), (unwritable,)))
    executor.submit(slots[1], m.RenderTask(2, "j2", (), (str(tmp_path / "b.mp4"),)))
    events = executor.poll(0)
    assert m.Done(2) in events and (tmp_path / "b.mp4").read_bytes() == b"an mp4"
    [lost] = [event for event in events if isinstance(event, m.Lost)]
    assert lost.seq == 1 and "could not be written" in lost.reason


def test_an_actor_whose_load_hangs_is_dropped_at_the_limit_and_placed_again(
    fake: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load that never answers (a stalled network file system) must not hold its slot, and the
    jobs charged meanwhile, for ever: past the limit it counts as a failed load."""
    now = [1000.0]
    monkeypatch.setattr(ray_cluster, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=lambda s: None))
    executor = RayExecutor(Settings(executor="ray", engine_load_timeout_s=60))
    fake.loads = HANGS
    for _ in range(MAX_FAILED_STARTS):
        executor.poll(0)  # an actor placed, its load under way
        now[0] += 59
        executor.poll(0)
        assert executor.engine.error is None and len(fake.killed) < MAX_FAILED_STARTS
        now[0] += 2
        executor.poll(0)  # past the limit: dropped
    assert executor.engine.error == "a ray worker did not load the engine within 60 s"
    assert len(fake.killed) == MAX_FAILED_STARTS and not executor.engine.ready
    fake.loads = READY  # the file system back: the actor placed after the last drop still hangs
    now[0] += 61
    executor.poll(0)
    assert len(fake.killed) == MAX_FAILED_STARTS + 1
    engine = executor.engine
    assert (engine.ready, engine.error, engine.slots) == (True, None, 1)


def test_a_cluster_without_render_slots_fails_its_engine_past_the_load_limit_until_one_joins(
    fake: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No node offering slots (none joined yet, or every one gone) would hold the jobs charged meanwhile
    for ever; a node that joins brings the cluster back."""
    now = [1000.0]
    monkeypatch.setattr(ray_cluster, "time", SimpleNamespace(monotonic=lambda: now[0], sleep=lambda s: None))
    executor = RayExecutor(Settings(executor="ray", engine_load_timeout_s=60))
    fake.slots = 0
    executor.poll(0)
    now[0] += 60
    executor.poll(0)
    assert executor.engine.error is None
    now[0] += 1
    executor.poll(0)
    assert executor.engine.error is not None
    assert executor.engine.error.startswith(
        "the ray cluster has offered no render slots (openreel_slot) for 60 s"
    )
    assert not executor.engine.ready and executor.free_slots() == []
    fake.slots = 2  # a node joins
    executor.poll(0)
    engine = executor.engine
    assert (engine.ready, engine.error, engine.slots) == (True, None, 2)
    fake.slots = 0  # Ray counts its slots gone before its actors have died: they still render
    executor.poll(0)
    now[0] += 61
    executor.poll(0)
    assert (executor.engine.error, len(executor.free_slots())) == (None, 2)
