"""Video engines. ``load_engine`` is the one way in; torch and diffusers load only when it is called,
so importing ``openreel.engine.plan`` (or this package) stays cheap for the HTTP service.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from openreel.engine.weights import Adapter, Checkpoint, WeightsMissing, require, require_adapter

if TYPE_CHECKING:
    from openreel.engine.base import VideoEngine
    from openreel.settings import Settings

ENGINES = ("tiny", "ltx2")
# v3: a causal video decoder (v2 added the latent upsampler). A new name per change, so caches built
# before it are not taken as current.
TINY_CHECKPOINT_DIR = "tiny-ltx2-v3"


@dataclass(frozen=True)
class EngineOptions:
    """How a worker loads its engine; where weights are cached is the worker's own business."""

    name: str
    checkpoint: str | None = None
    precision: str = "bf16"
    offload: str = "none"
    prompt_cache_size: int = 4
    # The IC-LoRA that serves reference_images (weights.Adapter syntax); None: references are refused.
    reference_adapter: str | None = None


class ResidentEngine:
    """The engine a worker keeps loaded. A task for another checkpoint swaps it: the old weights are
    freed before the new ones load, so one set is in memory at a time (a swap costs a full load)."""

    def __init__(self, options: EngineOptions, cache_dir: Path) -> None:
        self._options, self._cache_dir = options, cache_dir
        self.checkpoint = options.checkpoint
        self.engine: VideoEngine | None = load_engine(options, cache_dir=cache_dir)

    def get(self, checkpoint: str | None) -> VideoEngine:
        wanted = checkpoint or self._options.checkpoint
        if self.engine is not None and wanted == self.checkpoint:
            return self.engine
        self.engine = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.engine = load_engine(replace(self._options, checkpoint=wanted), cache_dir=self._cache_dir)
        self.checkpoint = wanted
        return self.engine


def load_engine(options: EngineOptions, *, cache_dir: Path) -> VideoEngine:
    """Load the engine ``options`` name.

    ``tiny``: a random-weight LTX-2 written once under ``cache_dir`` and loaded through the same
    ``from_pretrained`` path as the real model (output is noise). ``ltx2``: a real diffusers LTX-2
    checkpoint, a local directory or hub repo id given as ``checkpoint``, already on this machine.
    A configured reference adapter that is not on this machine leaves the engine loaded without it:
    its reference renders then fail, saying what to run.
    """
    name, checkpoint = options.name, options.checkpoint
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    if name == "ltx2" and not checkpoint:
        raise ValueError(
            "engine 'ltx2' needs a checkpoint (OPENREEL_CHECKPOINT): a diffusers LTX-2 directory "
            "or a hub repo id such as Lightricks/LTX-2"
        )
    from openreel.engine.ltx2 import NO_REFERENCE_ADAPTER, LTX2Engine

    if name == "tiny":
        from openreel.engine.tiny import save_tiny_checkpoint

        directory, grid_scale = save_tiny_checkpoint(Path(cache_dir) / TINY_CHECKPOINT_DIR), 0.25
    else:
        assert checkpoint is not None
        directory, grid_scale = require(Checkpoint.parse(checkpoint)), 1.0
    adapter, adapter_error = None, None
    if options.reference_adapter:
        try:
            adapter = require_adapter(Adapter.parse(options.reference_adapter))
        except WeightsMissing as exc:
            adapter_error = f"the reference adapter is missing on this worker: {exc}"
    return LTX2Engine.from_pretrained(
        directory,
        name=name,
        grid_scale=grid_scale,
        random_weights=name == "tiny",
        precision=options.precision,
        offload=options.offload,
        prompt_cache_size=options.prompt_cache_size,
        reference_adapter=adapter,
        reference_error=adapter_error or NO_REFERENCE_ADAPTER,
    )


def model_checkpoint(settings: Settings, model_id: str) -> Checkpoint | None:
    """The checkpoint serving a model id: the tiny build in the data dir, or the configured one."""
    if settings.engine == "tiny":
        return Checkpoint(str((settings.data_dir / "models" / TINY_CHECKPOINT_DIR).resolve()))
    configured = settings.checkpoint_for(model_id)
    return Checkpoint.parse(configured) if configured else None
