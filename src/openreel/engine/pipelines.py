"""The diffusers LTX-2 pipelines openreel drives, with keyframes placed on the pixel frame they name.

diffusers reads ``LTX2VideoCondition.index`` as a latent index and places a keyframe at pixel frame
``(index - 1) * 8 + 1``: the last latent (``index=-1``) lands 8 frames before the end. Lightricks'
``VideoConditionByKeyframeIndex`` takes a pixel ``frame_idx``; a ``Condition`` carries one, and only the
keyframe's time coordinates move: it is still encoded and appended as extra tokens as upstream does.
Each condition actually encoded is reported to ``on_condition`` (the render trace). A condition of several
frames at index 0 (an extension's lead) replaces the first latent frames, as Lightricks' prefix conditioning
does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import LTX2ConditionPipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2InContextPipeline

# kind, width, height, the pixel frame it starts at, how many pixel frames it holds
ConditionReport = Callable[[str, int, int, int | None, int], None]


@dataclass
class Condition(LTX2VideoCondition):
    """A frame condition: ``kind`` names it in the trace, ``pixel_frame`` is where a keyframe sits."""

    kind: str = "image"
    pixel_frame: int = 0


class PixelFrameKeyframes:
    """Mixed into a keyframe-capable LTX-2 pipeline (see the module docstring)."""

    on_condition: ConditionReport | None = None
    vae_spatial_compression_ratio: int
    vae_temporal_compression_ratio: int
    _keyframes: list[Condition]

    def preprocess_conditions(self, conditions: Any = None, *args: Any, **kwargs: Any) -> Any:
        out = super().preprocess_conditions(conditions, *args, **kwargs)  # type: ignore[misc]
        frames, _, indices, _ = out
        given = [] if conditions is None else list(conditions)
        if len(frames) != len(given):
            raise ValueError("a frame condition fell outside the clip")
        self._keyframes = [c for c, index in zip(given, indices, strict=True) if index != 0]
        for condition, pixels, index in zip(given, frames, indices, strict=True):
            if index == 0 and self.on_condition is not None:
                self.on_condition(condition.kind, pixels.shape[-1], pixels.shape[-2], 0, pixels.shape[2])
        return out

    def _prepare_keyframe_coords(
        self,
        keyframe_latent_num_frames: int,
        keyframe_latent_height: int,
        keyframe_latent_width: int,
        pixel_frame_idx: int,
        num_pixel_frames: int,
        fps: float,
        device: torch.device,
    ) -> torch.Tensor:
        condition = self._keyframes.pop(0)
        if self.on_condition is not None:
            scale = self.vae_spatial_compression_ratio
            self.on_condition(
                condition.kind,
                keyframe_latent_width * scale,
                keyframe_latent_height * scale,
                condition.pixel_frame,
                (keyframe_latent_num_frames - 1) * self.vae_temporal_compression_ratio + 1,
            )
        return super()._prepare_keyframe_coords(  # type: ignore[misc]
            keyframe_latent_num_frames=keyframe_latent_num_frames,
            keyframe_latent_height=keyframe_latent_height,
            keyframe_latent_width=keyframe_latent_width,
            pixel_frame_idx=condition.pixel_frame,
            num_pixel_frames=num_pixel_frames,
            fps=fps,
            device=device,
        )


class KeyframePipeline(PixelFrameKeyframes, LTX2ConditionPipeline):
    """Text, first frame (latent 0 replaced) and last frame (appended keyframe) renders."""


class ReferencePipeline(PixelFrameKeyframes, LTX2InContextPipeline):
    """The same with an IC-LoRA's reference video appended; the reference's encoded size is reported."""

    def _encode_reference_conditions(
        self, reference_conditions: Any, height: int, width: int, *args: Any, **kwargs: Any
    ) -> Any:
        factor = kwargs.get("reference_downscale_factor", args[1] if len(args) > 1 else 1)
        if self.on_condition is not None:
            for condition in reference_conditions:
                self.on_condition("reference", width // factor, height // factor, None, len(condition.frames))
        return super()._encode_reference_conditions(reference_conditions, height, width, *args, **kwargs)
