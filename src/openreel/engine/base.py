"""The engine contract the worker renders through: a plan and optional keyframes in, a clip out.

Kept free of torch and diffusers so the service can type against it without loading a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import PIL.Image

    from openreel.engine.plan import RenderPlan
    from openreel.engine.recipes import RecipeKind


@dataclass
class Clip:
    """Exactly what was promised: ``frames`` is uint8 (plan.num_frames, plan.height, plan.width, 3).

    ``audio`` is float32 (channels, plan.audio_samples(sample_rate)) or None when the request asked for
    no audio, so the muxer never has to trim or guess. An extension's sound starts with its lead's (what
    the join cross-fades over); a plain clip's is exactly as long as its frames.
    """

    frames: np.ndarray
    audio: np.ndarray | None
    sample_rate: int
    # What the render did, recorded from the calls made (engine/trace.py); None for engines without one.
    recipe: dict[str, Any] | None = None
    # The prompt rendered in place of the plan's when it asked for enhancement; None: the plan's own.
    prompt: str | None = None


@dataclass(frozen=True)
class Lead:
    """The end of the clip an extension continues: its last ``frames``, uint8 (n, h, w, 3), and its sound
    over them, float32 (channels, samples) at ``sample_rate`` (None: the clip is silent)."""

    frames: np.ndarray
    audio: np.ndarray | None
    sample_rate: int


class Cancelled(Exception):
    """Raised from the step callback to abandon a render at the next denoising step."""


StepCallback = Callable[[int, int], None]


class VideoEngine(Protocol):
    """A loaded model. ``render`` blocks; ``on_step(i, total)`` (1-based) reports progress and may cancel.
    ``references`` (at most 3) guide the look of the video; an engine without the means refuses them.
    ``lead``: the end of the clip an extension continues (plan.lead_frames of its frames, and its sound)."""

    name: str
    grid_scale: float  # passed to plan_render: the tiny engine denoises on a quarter-size grid
    random_weights: bool  # True: every surface must say the output is noise from random weights
    reference_error: str | None  # why references cannot be rendered; None: they can
    enhance_error: str | None  # why prompts cannot be enhanced (engine/enhance.py); None: they can
    # The loaded transformer's depth, which recipes.recipe takes (the STG block may lack); None: unknown.
    transformer_blocks: int | None

    @property
    def version(self) -> str:
        """The LTX-2 generation of the checkpoint, which picks the recipes' constants."""
        ...

    def unavailable(self, kind: RecipeKind) -> str | None:
        """Why this engine cannot render a recipe kind (a piece missing, the wrong weights); None: it can."""
        ...

    def render(
        self,
        plan: RenderPlan,
        first_frame: PIL.Image.Image | None,
        last_frame: PIL.Image.Image | None,
        on_step: StepCallback,
        references: Sequence[PIL.Image.Image] = (),
        lead: Lead | None = None,
    ) -> Clip: ...
