"""The interface the dispatcher drives: a pool of worker slots, each rendering one task at a time.

Two kinds stand behind it: local worker processes (the default, one per GPU) and Ray actors spread
over a cluster. Executors only run tasks and report; the dispatcher alone writes the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from openreel.executors import messages as m

if TYPE_CHECKING:
    from openreel.settings import Settings

# A worker that dies this many times in a row before its engine is loaded marks the engine failed.
MAX_FAILED_STARTS = 3
# A local slot whose engine failed is tried again 30 s later, then twice as long after each failure in
# a row, up to 15 minutes (a Ray cluster every 30 s): weights pulled meanwhile, or a GPU freed, bring it
# back without a restart, and a configuration that cannot load costs a worker's start now and then, not
# a core.
FAILURE_BACKOFF_S = 30.0
MAX_FAILURE_BACKOFF_S = 15 * 60.0


def failure_backoff(failures: int) -> float:
    """Seconds to wait before loading again after ``failures`` failures in a row (1 or more)."""
    return min(FAILURE_BACKOFF_S * 2 ** min(failures - 1, 16), MAX_FAILURE_BACKOFF_S)  # no overflow, ever


@dataclass(frozen=True)
class EngineState:
    name: str
    ready: bool = False
    random_weights: bool = False
    grid_scale: float = 1.0
    error: str | None = None
    # Reference images need an IC-LoRA adapter (OPENREEL_REFERENCE_ADAPTER); workers load it.
    reference_images: bool = False
    # A loaded worker's reason it cannot use the configured adapter (missing there, does not fit).
    reference_error: str | None = None
    # Why the loaded workers cannot enhance prompts; None: they can (or none has loaded yet).
    enhance_error: str | None = None
    # The loaded checkpoint's generation, and the recipe kinds it cannot run with the reason.
    version: str | None = None
    recipe_errors: dict[str, str] = field(default_factory=dict)
    transformer_blocks: int | None = None
    slots: int = 0
    busy: int = 0

    @classmethod
    def configured(cls, settings: Settings) -> EngineState:
        """What the settings promise before any worker has loaded."""
        return cls(
            name=settings.engine,
            random_weights=settings.engine == "tiny",
            reference_images=settings.reference_adapter is not None,
        )

    def loaded(self, ready: m.EngineReady) -> EngineState:
        """What a worker that has loaded its engine says about it (the last one to load speaks): an
        engine that loads somewhere has not failed."""
        return replace(
            self,
            error=None,
            random_weights=ready.random_weights,
            grid_scale=ready.grid_scale,
            reference_error=ready.reference_error if self.reference_images else None,
            enhance_error=ready.enhance_error,
            version=ready.version,
            recipe_errors=ready.recipe_errors,
            transformer_blocks=ready.transformer_blocks,
        )


class Executor(Protocol):
    @property
    def engine(self) -> EngineState: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def free_slots(self) -> list[str]:
        """The names of the loaded, idle worker slots."""
        ...

    def submit(self, slot: str, task: m.RenderTask) -> None: ...

    def cancel(self, seq: int) -> None:
        """Ask the worker to abandon the task at its next step; it answers with Cancelled."""
        ...

    def abort(self, seq: int) -> None:
        """Kill whatever runs the task (it overran) and replace that worker; no event follows."""
        ...

    def poll(self, timeout: float) -> list[m.TaskEvent]:
        """Progress and outcomes of submitted tasks, and Lost for those whose worker died."""
        ...

    def responsive(self) -> set[int]:
        """Tasks whose worker showed signs of life recently: their leases are renewed."""
        ...
