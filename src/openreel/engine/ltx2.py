"""LTX-2 through diffusers: one loaded set of weights serving text, first-frame, keyframe and reference
renders.

The diffusers pipelines share every component, so weights load once and the routing is only a choice
of entry point. Reference images go through the in-context (IC-LoRA) pipeline with the configured
adapter switched on for that render alone. The pipeline works on a grid LTX-2 accepts (sides /32,
8k+1 frames, see plan.py); this module turns its output into exactly the frames and samples the plan
promises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import LTX2ConditionPipeline, LTX2ImageToVideoPipeline, LTX2Pipeline
from diffusers.hooks import apply_layerwise_casting
from diffusers.pipelines.ltx2 import LTX2LatentUpsamplePipeline
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2InContextPipeline, LTX2ReferenceCondition

from openreel.engine.base import Clip, StepCallback
from openreel.engine.plan import RenderPlan, center_crop_box, cover_size, sheet_layout
from openreel.engine.prompt_cache import PromptCache
from openreel.engine.weights import UPSAMPLER_DIR

logger = logging.getLogger(__name__)
# Frames scaled per interpolate call: bounds the working set (~100 MB at 1080p).
_RESIZE_CHUNK = 16
PRECISIONS = ("bf16", "fp8")
OFFLOADS = ("none", "model", "sequential")
DEFAULT_PROMPT_CACHE = 4
REFERENCE_ADAPTER = "reference"
NO_REFERENCE_ADAPTER = (
    "reference images need an IC-LoRA adapter (OPENREEL_REFERENCE_ADAPTER), which this worker has not loaded"
)
# Reference sheets are letterboxed on white, as reference sheets usually are.
SHEET_BACKGROUND = (255, 255, 255)


def guidance_kwargs(guidance_scale: float) -> dict[str, float]:
    """Every guidance knob of the 0.42.1 LTX-2 pipelines, set from the plan's one number.

    diffusers defaults to audio CFG 7, STG 1 and modality isolation 3, so a call that only sets
    ``guidance_scale=1`` still makes up to 4 transformer passes per step. At or below 1 (distilled
    checkpoints) all of it is off: CFG runs when either CFG scale is > 1, STG when either STG scale is
    > 0, modality guidance when either modality scale is > 1. Above 1, plain CFG at the same scale for
    video and audio with the model's usual 0.7 rescale; STG and modality isolation stay off because
    each costs a further full transformer pass per step. The audio values are never 0 or None:
    diffusers replaces a falsy audio value with the video one (``audio_x or x``).
    """
    if guidance_scale <= 1.0:
        return {
            "guidance_scale": 1.0,
            "audio_guidance_scale": 1.0,
            "stg_scale": 0.0,
            "audio_stg_scale": 0.0,  # falsy, so it becomes stg_scale, which is 0 too
            "modality_scale": 1.0,
            "audio_modality_scale": 1.0,
            "guidance_rescale": 0.0,
            "audio_guidance_rescale": 0.0,
        }
    return {
        "guidance_scale": guidance_scale,
        "audio_guidance_scale": guidance_scale,
        "stg_scale": 0.0,
        "audio_stg_scale": 0.0,
        "modality_scale": 1.0,
        "audio_modality_scale": 1.0,
        "guidance_rescale": 0.7,
        "audio_guidance_rescale": 0.7,
    }


class TrueLastFrame:
    """Mixed into a keyframe-capable LTX-2 pipeline: its last-latent image keyframe sits on the final
    pixel frame.

    diffusers reads ``LTX2VideoCondition.index`` as a latent index and places a keyframe at pixel
    frame ``(index - 1) * 8 + 1``, so ``index=-1`` lands 8 frames before the end (frame 185 of 193).
    Lightricks' ltx-core takes a pixel ``frame_idx`` for the same mechanism; an end keyframe there
    is ``num_frames - 1``. Only the keyframe's positional coordinates move: it is still encoded and
    appended as extra tokens exactly as upstream does.
    """

    _keyframe_num_frames: int | None = None
    vae_temporal_compression_ratio: int

    def prepare_latents(self, *args: Any, **kwargs: Any) -> Any:
        # 0.42.1 calls this with keywords only; num_frames is needed to recognise the last latent.
        self._keyframe_num_frames = kwargs.get("num_frames")
        try:
            return super().prepare_latents(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._keyframe_num_frames = None

    def last_latent_pixel_frame(self, num_frames: int) -> int:
        """Where upstream puts a keyframe at the last latent index (``index=-1``)."""
        last_latent = (num_frames - 1) // self.vae_temporal_compression_ratio
        return max((last_latent - 1) * self.vae_temporal_compression_ratio + 1, 0)

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
        n = self._keyframe_num_frames
        if n is not None and num_pixel_frames == 1 and pixel_frame_idx == self.last_latent_pixel_frame(n):
            pixel_frame_idx = n - 1
        return super()._prepare_keyframe_coords(  # type: ignore[misc]
            keyframe_latent_num_frames=keyframe_latent_num_frames,
            keyframe_latent_height=keyframe_latent_height,
            keyframe_latent_width=keyframe_latent_width,
            pixel_frame_idx=pixel_frame_idx,
            num_pixel_frames=num_pixel_frames,
            fps=fps,
            device=device,
        )


class LastFrameConditionPipeline(TrueLastFrame, LTX2ConditionPipeline):
    """Keyframes (first and/or last frame) with the last one on the final pixel frame."""


class ReferencePipeline(TrueLastFrame, LTX2InContextPipeline):
    """Reference (IC-LoRA) conditioning, with keyframes placed as in ``LastFrameConditionPipeline``."""


def reference_downscale(adapter: Path) -> int:
    """How much smaller than the output the adapter wants its reference; Lightricks' IC-LoRAs say so in
    their safetensors metadata (absent: the same size)."""
    from safetensors import safe_open

    with safe_open(str(adapter), framework="pt") as f:
        return int((f.metadata() or {}).get("reference_downscale_factor", 1))


def reference_sheet(images: Sequence[PIL.Image.Image], width: int, height: int) -> PIL.Image.Image:
    """The references composed into one sheet of exactly (width, height), laid out by ``sheet_layout``:
    each image whole, aspect kept, letterboxed on white; never cropped or stretched."""
    sheet = PIL.Image.new("RGB", (width, height), SHEET_BACKGROUND)
    boxes = sheet_layout([image.size for image in images], (width, height))
    for image, (left, top, w, h) in zip(images, boxes, strict=True):
        sheet.paste(image.convert("RGB").resize((w, h), PIL.Image.Resampling.LANCZOS), (left, top))
    return sheet


def fit_image(image: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    """Scale to cover (width, height) with the aspect kept, then centre-crop: never stretch."""
    image = image.convert("RGB")
    size = cover_size(image.size, (width, height))
    if size != image.size:
        image = image.resize(size, PIL.Image.Resampling.LANCZOS)
    return image.crop(center_crop_box(size, (width, height)))


def frames_to_output(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """float [0, 1] (F, h, w, 3) -> uint8 (F, height, width, 3) by bilinear cover-scale and centre crop.

    Quantised before scaling: torch's uint8 bilinear kernel is ~5x faster than float32 on CPU, and
    upscaling 8-bit frames loses nothing visible. Chunked so the working set stays small at 1080p.
    """
    num, src_h, src_w, _ = frames.shape
    size = cover_size((src_w, src_h), (width, height))
    left, top, right, bottom = center_crop_box(size, (width, height))
    out = np.empty((num, height, width, 3), dtype=np.uint8)
    for start in range(0, num, _RESIZE_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + _RESIZE_CHUNK]))
        chunk = (chunk * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 3, 1, 2)
        if size != (src_w, src_h):
            chunk = torch.nn.functional.interpolate(
                chunk, size=(size[1], size[0]), mode="bilinear", align_corners=False
            )
        out[start : start + len(chunk)] = chunk[:, :, top:bottom, left:right].permute(0, 2, 3, 1).numpy()
    return out


def audio_to_output(audio: torch.Tensor | np.ndarray, num_samples: int) -> np.ndarray:
    """First batch item as float32 (channels, num_samples): trimmed, or zero-padded at the end."""
    wave = audio[0]
    wave = wave.float().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave, np.float32)
    wave = wave.reshape(1, -1) if wave.ndim == 1 else wave
    out = np.zeros((wave.shape[0], num_samples), dtype=np.float32)
    keep = min(num_samples, wave.shape[1])
    out[:, :keep] = wave[:, :keep]
    return out


class LTX2Engine:
    """A loaded LTX-2 checkpoint (real or tiny) implementing ``VideoEngine``."""

    def __init__(
        self,
        pipe: LTX2Pipeline,
        *,
        name: str,
        grid_scale: float,
        random_weights: bool,
        device: str,
        prompt_cache_size: int = DEFAULT_PROMPT_CACHE,
        upsampler: LTX2LatentUpsamplePipeline | None = None,
        reference_downscale: int = 1,
        reference_error: str | None = NO_REFERENCE_ADAPTER,
    ) -> None:
        """``reference_error`` None: the pipeline's transformer carries the reference IC-LoRA, loaded as
        ``REFERENCE_ADAPTER`` and switched off; otherwise why references cannot be rendered."""
        self.name = name
        self.grid_scale = grid_scale
        self.random_weights = random_weights
        self.device = device
        self.t2v = pipe
        # Same module objects, not copies: the weights are in memory once.
        components = {k: v for k, v in pipe.components.items() if v is not None}
        self.i2v = LTX2ImageToVideoPipeline(**components)
        self.keyframes = LastFrameConditionPipeline(**components)
        self.references = ReferencePipeline(**components) if reference_error is None else None
        self.reference_downscale = reference_downscale
        self.reference_error = reference_error
        self.prompts = PromptCache(pipe.encode_prompt, prompt_cache_size)
        self.upsampler = upsampler
        # Lightricks' distilled checkpoints ship a scheduler without dynamic shifting; the dev ones
        # shift dynamically and want their own many-step schedule, not the distilled sigmas.
        self.distilled = not pipe.scheduler.config.get("use_dynamic_shifting", False)
        pipelines = [self.t2v, self.i2v, self.keyframes, *([self.references] if self.references else [])]
        for p in (*pipelines, *([upsampler] if upsampler else [])):
            p.set_progress_bar_config(disable=True)
        for p in pipelines:
            p.encode_prompt = self.prompts  # type: ignore[method-assign]
        self.sample_rate = int(pipe.vocoder.config.output_sampling_rate)
        # The pipelines share a scheduler whose state is per call: one render at a time.
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        name: str,
        grid_scale: float,
        random_weights: bool,
        device: str | None = None,
        precision: str = "bf16",
        offload: str = "none",
        prompt_cache_size: int = DEFAULT_PROMPT_CACHE,
        reference_adapter: Path | None = None,
        reference_error: str = NO_REFERENCE_ADAPTER,
    ) -> LTX2Engine:
        """Load a diffusers LTX-2 directory; bf16 on CUDA, float32 on CPU.

        ``reference_adapter`` is an IC-LoRA ``.safetensors`` (Lightricks' or diffusers' key format)
        loaded into the transformer but active only while a render has reference images.

        ``precision="fp8"`` stores the transformer's and the text encoder's weights in float8 and
        computes in the load dtype, layer by layer (about half their memory). ``offload`` keeps
        weights in CPU memory and moves them to the GPU per model (``model``) or per layer
        (``sequential``, the least memory and the slowest); both need a CUDA GPU.
        """
        if precision not in PRECISIONS or offload not in OFFLOADS:
            raise ValueError(f"precision must be one of {PRECISIONS} and offload one of {OFFLOADS}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if offload != "none" and not device.startswith("cuda"):
            raise ValueError(f"offload={offload!r} moves weights to a CUDA GPU per use; this worker has none")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        pipe = LTX2Pipeline.from_pretrained(str(source), dtype=dtype)
        downscale = 1
        error: str | None = reference_error
        if reference_adapter is not None:
            # Before the fp8 casting, which then leaves the LoRA's own weights in the load dtype and
            # keeps PEFT from casting inputs to float8. An adapter that does not fit this checkpoint
            # costs only the reference renders (diffusers removes a half-injected adapter).
            try:
                downscale = reference_downscale(reference_adapter)
                pipe.load_lora_weights(str(reference_adapter), adapter_name=REFERENCE_ADAPTER)
                pipe.disable_lora()
                error = None
            except Exception as exc:
                logger.exception("reference adapter %s not loaded", reference_adapter)
                error = (
                    f"the reference adapter {reference_adapter} does not load into this checkpoint: "
                    f"{type(exc).__name__}: {exc}"
                )
        if precision == "fp8":
            pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
            # Embeddings (and lm_head, which shares their weight), norms and the unused vision tower
            # stay in the load dtype.
            apply_layerwise_casting(
                pipe.text_encoder,
                storage_dtype=torch.float8_e4m3fn,
                compute_dtype=dtype,
                skip_modules_pattern=("embed", "lm_head", "norm", "vision"),
            )
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        upsampler = None
        if (Path(source) / UPSAMPLER_DIR).is_dir():
            model = LTX2LatentUpsamplerModel.from_pretrained(
                str(Path(source) / UPSAMPLER_DIR), torch_dtype=dtype
            )
            upsampler = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=model.to(device))
        return cls(
            pipe,
            name=name,
            grid_scale=grid_scale,
            random_weights=random_weights,
            device=device,
            prompt_cache_size=prompt_cache_size,
            upsampler=upsampler,
            reference_downscale=downscale,
            reference_error=error,
        )

    def render(
        self,
        plan: RenderPlan,
        first_frame: PIL.Image.Image | None,
        last_frame: PIL.Image.Image | None,
        on_step: StepCallback,
        references: Sequence[PIL.Image.Image] = (),
    ) -> Clip:
        """Denoise, decode, then cut to the plan's exact frames and samples. ``Cancelled`` propagates.

        With a distilled checkpoint the plan's explicit sigmas drive stage 1, and a plan asking for
        two stages (and a checkpoint with a latent upsampler) renders stage 1 at half the grid,
        upsamples the latents x2 and refines them at full size; the keyframes condition both stages.
        Reference images guide stage 1 only, as a reference sheet; the refine steps run without the
        adapter, as in Lightricks' IC-LoRA two-stage recipe.
        """
        given = (first_frame is not None, last_frame is not None, len(references))
        if (plan.has_first_frame, plan.has_last_frame, plan.reference_count) != given:
            raise ValueError("the plan's keyframe flags and reference_count must match the images passed")
        if references and self.references is None:
            raise RuntimeError(self.reference_error)
        schedule: dict[str, Any] = {"num_inference_steps": plan.steps}
        if plan.sigmas and self.distilled:
            schedule = {"sigmas": list(plan.sigmas)}
        refine = plan.refine_sigmas if self.distilled and self.upsampler is not None else None
        full = (plan.gen_width, plan.gen_height)
        stage1_steps = len(schedule.get("sigmas", [])) or plan.steps
        total = stage1_steps + (len(refine) if refine else 0)
        generator = torch.Generator(self.device).manual_seed(plan.seed)
        with self._lock, torch.inference_mode():
            if refine is None:
                out = self._denoise(
                    plan, first_frame, last_frame, full, schedule, generator, on_step, 0, total, references
                )
            else:
                assert self.upsampler is not None
                low = self._denoise(
                    plan,
                    first_frame,
                    last_frame,
                    plan.stage1_size,
                    schedule,
                    generator,
                    on_step,
                    0,
                    total,
                    references,
                    output_type="latent",
                )
                upscaled = self.upsampler(
                    latents=low.frames, latents_normalized=False, output_type="latent", return_dict=False
                )[0]
                refine_schedule = {
                    "sigmas": list(refine),
                    "noise_scale": refine[0],
                    "latents": upscaled,
                    "audio_latents": low.audio,
                }
                out = self._denoise(
                    plan,
                    first_frame,
                    last_frame,
                    full,
                    refine_schedule,
                    generator,
                    on_step,
                    stage1_steps,
                    total,
                )
        frames = frames_to_output(np.asarray(out.frames[0])[: plan.num_frames], plan.width, plan.height)
        audio = None
        if plan.generate_audio:
            audio = audio_to_output(out.audio, plan.duration_s * self.sample_rate)
        return Clip(frames=frames, audio=audio, sample_rate=self.sample_rate)

    def _denoise(
        self,
        plan: RenderPlan,
        first_frame: PIL.Image.Image | None,
        last_frame: PIL.Image.Image | None,
        size: tuple[int, int],
        schedule: dict[str, Any],
        generator: torch.Generator,
        on_step: StepCallback,
        done: int,
        total: int,
        references: Sequence[PIL.Image.Image] = (),
        output_type: str = "np",
    ) -> Any:
        """One pass of the pipeline that matches the conditions, at ``size``; steps report as done + i.

        References become one sheet at the adapter's reference size, looped over every frame (the
        Ingredients IC-LoRA was trained on a still sheet played as a video of the output's length).
        """
        w, h = size
        first = fit_image(first_frame, w, h) if first_frame is not None else None
        last = fit_image(last_frame, w, h) if last_frame is not None else None

        def step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(done + i + 1, total)
            return kwargs

        common: dict[str, Any] = {
            "prompt": plan.prompt,
            "negative_prompt": plan.negative_prompt,
            "num_frames": plan.gen_frames,
            "height": h,
            "width": w,
            "frame_rate": float(plan.fps),
            "generator": generator,
            "output_type": output_type,
            "callback_on_step_end": step_end,
            **schedule,
            **guidance_kwargs(plan.guidance_scale),
        }
        conditions = [LTX2VideoCondition(frames=first, index=0)] if first is not None else []
        if last is not None:
            conditions.append(LTX2VideoCondition(frames=last, index=-1))
        if references:
            assert self.references is not None
            f, grid = self.reference_downscale, self.references.vae_spatial_compression_ratio
            # The pipeline takes the reference at (w // f, h // f) rounded down to its grid, cropping
            # the rest; a sheet made at that size is used whole.
            sheet = reference_sheet(
                references, max(grid, w // f // grid * grid), max(grid, h // f // grid * grid)
            )
            # On the transformer every pipeline shares: only under self._lock, and off again after.
            self.references.enable_lora()
            try:
                return self.references(
                    conditions=conditions or None,
                    reference_conditions=[LTX2ReferenceCondition(frames=[sheet] * plan.gen_frames)],
                    reference_downscale_factor=f,
                    **common,
                )
            finally:
                self.references.disable_lora()
        if last is not None:
            return self.keyframes(conditions=conditions, **common)
        if first is not None:
            return self.i2v(image=first, **common)
        return self.t2v(**common)
