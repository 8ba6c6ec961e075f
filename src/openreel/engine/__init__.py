"""Video engines. ``load_engine`` is the one way in; torch and diffusers load only when it is called,
so importing ``openreel.engine.plan`` (or this package) stays cheap for the HTTP service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from openreel.engine.weights import (
    Adapter,
    Checkpoint,
    Folder,
    WeightsMissing,
    declared_grid_scale,
    distilled_lora_in,
    require,
    require_adapter,
    require_folder,
    upsampler_in,
)

if TYPE_CHECKING:
    from openreel.engine.base import VideoEngine
    from openreel.engine.ltx2 import Parts

EngineName = Literal["tiny", "ltx2"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)
# v7: Gemma 3's turn and image tokens and chat format (prompt enhancement); v6: 2 transformer blocks (v5
# had 30); v4: the real layout (dev weights, a distilled LoRA, the
# upsampler). A new name per change, so caches built before it are not taken as current.
TINY_CHECKPOINT_DIR = "tiny-ltx2-v8"
# Inductor's kernels and graphs of the compiled blocks, beside the weights cache: kept across restarts.
COMPILE_CACHE_DIR = "torch-compile"
T = TypeVar("T")


@dataclass(frozen=True)
class EngineOptions:
    """How a worker loads its engine; where weights are cached is the worker's own business."""

    name: str
    checkpoint: str | None = None
    precision: str = "bf16"
    offload: str = "none"
    prompt_cache_size: int = 4
    compile: bool = False
    # The IC-LoRA that serves reference_images (weights.Adapter syntax); None: references are refused.
    reference_adapter: str | None = None
    # The distilled LoRA (Adapter syntax) and x2 latent upsampler (Folder syntax) when they are not
    # beside the checkpoint; None: look for them there.
    distilled_lora: str | None = None
    upsampler: str | None = None


def _found(find: Callable[[], T]) -> tuple[T | None, str | None]:
    try:
        return find(), None
    except WeightsMissing as exc:
        return None, str(exc)


def _adapter(source: str) -> Path:
    return require_adapter(Adapter.parse(source))


def _folder(source: str) -> Path:
    return require_folder(Folder.parse(source))


def find_parts(options: EngineOptions, directory: Path) -> Parts:
    """The distilled LoRA, upsampler and reference adapter this worker can load, or why not."""
    from openreel.engine.ltx2 import NO_REFERENCE_ADAPTER, Parts

    lora, lora_error = _found(
        partial(_adapter, options.distilled_lora)
        if options.distilled_lora
        else partial(distilled_lora_in, directory)
    )
    upsampler, upsampler_error = _found(
        partial(_folder, options.upsampler) if options.upsampler else partial(upsampler_in, directory)
    )
    adapter, adapter_error = (None, None)
    if options.reference_adapter:
        adapter, adapter_error = _found(partial(_adapter, options.reference_adapter))
    return Parts(
        distilled_lora=lora,
        lora_error=lora_error,
        upsampler=upsampler,
        upsampler_error=upsampler_error,
        reference_adapter=adapter,
        reference_error=(
            f"the reference adapter is missing on this worker: {adapter_error}"
            if adapter_error
            else NO_REFERENCE_ADAPTER
        ),
    )


def load_engine(options: EngineOptions, *, cache_dir: Path) -> VideoEngine:
    """Load the engine ``options`` name.

    ``tiny``: a random-weight LTX-2 in the real layout, written once under ``cache_dir`` and loaded
    through the same ``from_pretrained`` path as the real model (output is noise). ``ltx2``: a real
    diffusers LTX-2 checkpoint, a local directory or hub repo id given as ``checkpoint``, already on this
    machine. A piece that is missing (distilled LoRA, upsampler, reference adapter) leaves the engine
    loaded without it: the recipes that need it are refused, saying what to run.
    """
    name, checkpoint = options.name, options.checkpoint
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    if name == "ltx2" and not checkpoint:
        raise ValueError(
            "engine 'ltx2' needs a checkpoint (OPENREEL_CHECKPOINT): a diffusers LTX-2 directory "
            "or a hub repo id such as Lightricks/LTX-2"
        )
    from openreel.engine.ltx2 import LTX2Engine

    if name == "tiny":
        from openreel.engine.tiny import save_tiny_checkpoint

        directory = save_tiny_checkpoint(Path(cache_dir) / TINY_CHECKPOINT_DIR)
    else:
        assert checkpoint is not None
        directory = require(Checkpoint.parse(checkpoint))
    return LTX2Engine.from_pretrained(
        directory,
        name=name,
        grid_scale=declared_grid_scale(directory),
        random_weights=name == "tiny",
        parts=find_parts(options, directory),
        precision=options.precision,
        offload=options.offload,
        prompt_cache_size=options.prompt_cache_size,
        compile_cache=Path(cache_dir) / COMPILE_CACHE_DIR if options.compile else None,
    )
