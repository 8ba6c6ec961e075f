"""A quick engine and an in-process executor, for the tests of everything around the model.

The API, ledger, webhook, client and Studio tests need real MP4s of the promised shape, not a model's
pixels: those are the engine tests' business (tests/engine) and the end-to-end tests' (the tiny engine in
a live server). The quick engine paints each frame one grey level (the first and last frame are the
keyframe images when given) with a quiet tone, reports every denoising step of the plan's recipe (one per
``step_s``), and so goes through the real render task, muxer and probe in about a second; a prompt that
starts with ``FAIL`` fails it, one that holds ``fail_seed(n)`` fails the render of seed n, one that starts
with ``HOLD`` waits at its first step until cancelled. Its tone's pitch follows the seed, so samples of
one request differ. The executor runs it on threads of the server's own process: no worker process, no
torch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from openreel.engine import recipes
from openreel.engine.base import Clip, Lead, StepCallback
from openreel.engine.plan import RenderPlan
from openreel.executors import messages as m
from openreel.executors.base import EngineState
from openreel.executors.render import render_task
from openreel.settings import Settings

SAMPLE_RATE = 16_000  # the tiny engine's vocoder rate
# A prompt starting with this fails the render after its first step, as a model that runs out of memory
# would: for the tests of what a failed render costs and shows.
FAIL = "[quick engine: fail]"
# A prompt starting with this holds its render at its first step until the job is cancelled (for two
# minutes at most): for the tests that must find a job still running, however slow the machine.
HOLD = "[quick engine: hold]"
HOLD_S = 120.0


def fail_seed(seed: int) -> str:
    """In a prompt, fails only the render with this seed (one sample of several)."""
    return f"[quick engine: fail seed {seed}]"


VERSION: recipes.Version = "2.0"  # the tiny checkpoint's generation


class QuickEngine:
    name = "quick"
    grid_scale = 1.0
    random_weights = True  # no model at all: every surface must say the output is not one
    reference_error = "the quick test engine renders no reference images"
    enhance_error = None
    transformer_blocks = None
    version = VERSION

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s

    def unavailable(self, kind: recipes.RecipeKind) -> str | None:
        return None

    def render(
        self,
        plan: RenderPlan,
        first_frame: Image.Image | None,
        last_frame: Image.Image | None,
        on_step: StepCallback,
        references: Sequence[Image.Image] = (),
        lead: Lead | None = None,
    ) -> Clip:
        if references:
            raise RuntimeError(self.reference_error)
        total = sum(len(stage.sigmas) for stage in recipes.recipe(plan.recipe, self.version).stages)
        held_until = time.monotonic() + (HOLD_S if plan.prompt.startswith(HOLD) else 0)
        while time.monotonic() < held_until:
            time.sleep(self.step_s)
            on_step(0, total)  # raises once the job is cancelled
        for step in range(1, total + 1):
            time.sleep(self.step_s)
            on_step(step, total)
            if plan.prompt.startswith(FAIL) or fail_seed(plan.seed) in plan.prompt:
                raise RuntimeError("the render failed on request")
        levels = np.linspace(16, 235, plan.num_frames, dtype=np.uint8)[:, None, None, None]
        # A view of the levels, no memory of its own (the muxer reads it frame by frame): filling a
        # clip's worth of memory was half the cost of a render (hundreds of megabytes at 720p).
        frames = np.broadcast_to(levels, (plan.num_frames, plan.height, plan.width, 3))
        size = (plan.width, plan.height)
        if first_frame is not None or last_frame is not None:
            frames = frames.copy()
            for index, image in ((0, first_frame), (-1, last_frame)):
                if image is not None:
                    frames[index] = np.asarray(image.convert("RGB").resize(size))
        audio = None
        if plan.generate_audio:
            t = np.arange(plan.audio_samples(SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
            audio = np.stack([0.1 * np.sin(2 * np.pi * (220 + plan.seed % 220) * t)] * 2)
        # Its "enhancement" only marks the prompt, with the seed: the real one is tests/engine's business.
        enhanced = f"{plan.prompt} [enhanced with seed {plan.seed}]" if plan.enhance_prompt else None
        return Clip(frames, audio, SAMPLE_RATE, prompt=enhanced)


class QuickExecutor:
    """``settings.workers`` slots, each a thread rendering one task at a time with the quick engine.

    ``step_s`` paces the steps so tests can catch a job running (the quality recipe's 43 steps take about
    two seconds at the default). A slot is freed when its outcome is polled, as a worker process's is."""

    def __init__(self, settings: Settings, step_s: float = 0.05) -> None:
        self._engine = QuickEngine(step_s)
        self._preset = settings.x264_preset
        self._state = EngineState.configured(settings)
        self._slots: dict[str, int | None] = {f"quick-{i}": None for i in range(settings.workers)}
        self._stopped: set[int] = set()  # cancelled or aborted tasks, checked at every step
        self._aborted: set[int] = set()  # their outcome is dropped, as a killed worker's would be
        self._events: queue.Queue[m.TaskEvent] = queue.Queue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def engine(self) -> EngineState:
        with self._lock:
            busy = sum(seq is not None for seq in self._slots.values())
        return replace(self._state, slots=len(self._slots), busy=busy)

    def start(self) -> None:
        ready = m.EngineReady.of(self._engine)
        self._state = replace(self._state.loaded(ready), name=ready.name, ready=True)

    def stop(self) -> None:
        with self._lock:
            self._stopped.update(seq for seq in self._slots.values() if seq is not None)
        for thread in self._threads:
            thread.join(30)

    def free_slots(self) -> list[str]:
        with self._lock:
            return [name for name, seq in self._slots.items() if seq is None]

    def submit(self, slot: str, task: m.RenderTask) -> None:
        with self._lock:
            self._slots[slot] = task.seq
        thread = threading.Thread(target=self._run, args=(slot, task), name=f"openreel-{slot}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _run(self, slot: str, task: m.RenderTask) -> None:
        outputs = [Path(path) for path in task.output_paths]
        outcome = render_task(
            self._engine,
            task,
            outputs,
            x264_preset=self._preset,
            report=lambda percent: self._send(m.Progress(task.seq, percent)),
            cancelled=lambda: task.seq in self._stopped,
        )
        if task.seq in self._aborted:
            # Killed, as far as the dispatcher knows: nothing of it may surface.
            for output in outputs:
                output.unlink(missing_ok=True)
            self._free(task.seq)
        self._send(outcome)

    def _send(self, event: m.TaskEvent) -> None:
        if event.seq not in self._aborted:
            self._events.put(event)

    def _free(self, seq: int) -> None:
        with self._lock:
            self._slots = {name: None if busy == seq else busy for name, busy in self._slots.items()}

    def cancel(self, seq: int) -> None:
        self._stopped.add(seq)

    def abort(self, seq: int) -> None:
        self._aborted.add(seq)
        self._stopped.add(seq)

    def poll(self, timeout: float) -> list[m.TaskEvent]:
        events: list[m.TaskEvent] = []
        try:
            events.append(self._events.get(timeout=timeout))
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        for event in events:
            if not isinstance(event, m.Progress):
                self._free(event.seq)
        return events

    def responsive(self) -> set[int]:
        with self._lock:
            return {seq for seq in self._slots.values() if seq is not None}
