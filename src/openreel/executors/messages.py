"""What the server, its executors and their workers say to each other. Workers never touch the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from openreel.engine.plan import RenderPlan
from openreel.engine.recipes import RECIPE_KINDS

if TYPE_CHECKING:
    from openreel.engine.base import VideoEngine


@dataclass(frozen=True)
class Continued:
    """The clip an extension continues: its MP4, and which job's video it is (the result says so)."""

    job_id: str
    video: int
    mp4: bytes


@dataclass(frozen=True)
class RenderTask:
    """``plans``: one per sample of the request, the same render with its own seed, rendered in turn;
    sample ``i`` is written to ``output_paths[i]``."""

    seq: int
    job_id: str
    plans: tuple[RenderPlan, ...]
    output_paths: tuple[str, ...]
    first_frame: Image.Image | None = None
    last_frame: Image.Image | None = None
    references: tuple[Image.Image, ...] = ()
    extends: Continued | None = None


@dataclass(frozen=True)
class EngineReady:
    name: str
    grid_scale: float
    random_weights: bool
    # Why this worker cannot render reference images although an adapter is configured; None: it can.
    reference_error: str | None = None
    # Why this worker cannot enhance prompts (engine/enhance.py); None: it can.
    enhance_error: str | None = None
    # The checkpoint's LTX-2 generation, and why it cannot run a recipe kind (missing ones can).
    version: str | None = None
    recipe_errors: dict[str, str] = field(default_factory=dict)
    transformer_blocks: int | None = None

    @classmethod
    def of(cls, engine: VideoEngine) -> EngineReady:
        errors: dict[str, str] = {
            kind: e for kind in RECIPE_KINDS if (e := engine.unavailable(kind)) is not None
        }
        return cls(
            engine.name,
            engine.grid_scale,
            engine.random_weights,
            engine.reference_error,
            engine.enhance_error,
            engine.version,
            errors,
            engine.transformer_blocks,
        )


@dataclass(frozen=True)
class EngineFailed:
    error: str


@dataclass(frozen=True)
class Progress:
    seq: int
    percent: int


@dataclass(frozen=True)
class Done:
    seq: int
    media: dict[str, Any] = field(default_factory=dict)
    # Wall seconds of each part of the render on the worker: "render" (the engine), "encode" (the MP4).
    seconds: dict[str, float] = field(default_factory=dict)
    # The MP4s by sample, from workers on other machines; local workers write task.output_paths instead.
    videos: dict[int, bytes] | None = None


@dataclass(frozen=True)
class Failed:
    seq: int
    error: str


@dataclass(frozen=True)
class Cancelled:
    seq: int


@dataclass(frozen=True)
class Lost:
    """The worker running this task died or became unreachable; the task did not finish."""

    seq: int
    reason: str


Outcome = Done | Failed | Cancelled
TaskEvent = Progress | Done | Failed | Cancelled | Lost
Event = EngineReady | EngineFailed | TaskEvent
