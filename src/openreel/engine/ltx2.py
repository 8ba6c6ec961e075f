"""LTX-2 through diffusers: one resident checkpoint rendering every recipe of ``recipes.py``.

A render is the recipe's stages on the checkpoint's weights: stage 1 at half the grid, the x2 latent
upsampler, stage 2 at the full grid, each stage with its frame conditions encoded again at its own size,
then a tiled VAE decode. Dev checkpoints run their distilled stages with the distilled LoRA fused
(``lora.py``); distilled checkpoints run them natively and cannot run dev stages. The pipeline works on
a grid LTX-2 accepts (sides /64, 8k+1 frames, see plan.py); this module turns its output into exactly
the frames and samples the plan promises, and records what it did (``trace.py``).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import PIL.Image
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, LTX2Pipeline
from diffusers.models.transformers.transformer_ltx2 import LTX2PerturbedAttnProcessor
from diffusers.pipelines.ltx2 import LTX2LatentUpsamplePipeline
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition
from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

from openreel.engine import recipes
from openreel.engine.base import Clip, Lead, StepCallback
from openreel.engine.compiled import compile_blocks
from openreel.engine.enhance import PromptEnhancer
from openreel.engine.fp8 import native_matmul, quantize_blocks
from openreel.engine.lead import AudioLead
from openreel.engine.lora import FusedLora
from openreel.engine.nag import NAGState, install
from openreel.engine.pipelines import Condition, KeyframePipeline, ReferencePipeline
from openreel.engine.plan import GRID, RenderPlan, center_crop_box, cover_size, plan_render, sheet_layout
from openreel.engine.recipes import Recipe, RecipeKind, Stage
from openreel.engine.text import PromptEncoder
from openreel.engine.trace import Trace

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Frames converted per step on the way out: bounds the working set (~100 MB at 1080p).
_OUTPUT_CHUNK = 16
PRECISIONS = ("bf16", "fp8")
OFFLOADS = ("none", "model", "sequential")
DEFAULT_PROMPT_CACHE = 4
# What a compiled engine renders before its first job: the fast ids' recipe where it can run.
WARM_UP_RECIPES: tuple[RecipeKind, ...] = ("fast", "quality")
# The warm-up clips: 2 s on two grid cells to the short side (rendered in moments, and no latent side of
# 1 in either stage, a size dynamo would compile a graph for alone), without and with a negative prompt
# (which the fast recipe's NAG steers by in other code).
WARM_UP_SECONDS = 2
WARM_UP_GRID_SCALE = 2 * GRID / 720
WARM_UP_NEGATIVE_PROMPTS = (None, "warm-up")
REFERENCE_ADAPTER = "reference"
NO_REFERENCE_ADAPTER = (
    "reference images need an IC-LoRA adapter (OPENREEL_REFERENCE_ADAPTER), which this worker has not loaded"
)
# Reference sheets are letterboxed on white, as reference sheets usually are.
SHEET_BACKGROUND = (255, 255, 255)
# ltx_core/model/video_vae/tiling.py TilingConfig.default(): 512 px tiles overlapping by 64, 64-frame
# tiles overlapping by 24 (diffusers counts strides: 512 - 64 and 64 - 24).
VAE_TILING = {
    "tile_sample_min_height": 512,
    "tile_sample_min_width": 512,
    "tile_sample_stride_height": 448,
    "tile_sample_stride_width": 448,
    "tile_sample_min_num_frames": 64,
    "tile_sample_stride_num_frames": 40,
}


# Components that stay in host memory: Gemma visits the GPU to encode (text.py); LTX-2.5's prompt
# enhancer (a second Gemma) is not used by openreel's recipes.
HOST_COMPONENTS = ("text_encoder", "prompt_enhancer")


def _build(cls: type[T], components: dict[str, Any]) -> T:
    """A pipeline over the loaded components it takes (LTX-2.5 adds some, e.g. a duration head, that the
    in-context pipeline does not)."""
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in components.items() if k in accepted})


def _no_progress(step: int, total: int) -> None:
    pass


def _perturbable(transformer: Any, blocks: tuple[int, ...]) -> None:
    """STG skips the self-attention of these blocks in its pass. diffusers wires that perturbation only
    into blocks built with ``perturbed_attn`` (its LTX-2.3 configs); the LTX-2.0 config has it off, where
    upstream perturbs block 29 all the same (ltx_pipelines utils/helpers.py). Same weights, other
    processor: unperturbed passes compute what they did."""
    for index in blocks:
        if index < len(transformer.transformer_blocks):
            block = transformer.transformer_blocks[index]
            if not block.perturbed_attn:
                block.perturbed_attn = True
                block.attn1.set_processor(LTX2PerturbedAttnProcessor())
                block.audio_attn1.set_processor(LTX2PerturbedAttnProcessor())


@dataclass(frozen=True)
class Parts:
    """The optional pieces beside a checkpoint, each either loaded or the reason it is not."""

    distilled_lora: Path | None = None
    lora_error: str | None = "no distilled LoRA was given"
    upsampler: Path | None = None
    upsampler_error: str | None = "no latent upsampler was given"
    reference_adapter: Path | None = None
    reference_error: str = NO_REFERENCE_ADAPTER


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


def conditioning_pixels(image: PIL.Image.Image, crf: int) -> np.ndarray:
    """An input image as the model was trained to see it: re-compressed as one H.264 frame at the
    generation's CRF, at its own size, before any resizing (ltx_pipelines media_io.load_image_conditioning:
    decode, preprocess at ``crf``, then resize and centre-crop per stage)."""
    return apply_image_conditioning_crf(np.asarray(image.convert("RGB")), crf)


def lead_on_grid(frames: np.ndarray, plan: RenderPlan) -> np.ndarray:
    """An extension's lead (frames of the output's size) padded, centred, to the grid's aspect, reflected
    at the edges: the pipelines scale a condition to cover the grid, and ``frames_to_output`` maps the
    grid back by covering the output and cropping, so the lead comes out where it was, unscaled (given
    as it is, it would be scaled to cover the grid and come out zoomed in)."""
    width, height = cover_size((plan.gen_width, plan.gen_height), (plan.width, plan.height))
    left, top, _, _ = center_crop_box((width, height), (plan.width, plan.height))
    pad = ((0, 0), (top, height - plan.height - top), (left, width - plan.width - left), (0, 0))
    return np.pad(frames, pad, mode="reflect")


def frames_to_output(video: torch.Tensor, width: int, height: int) -> np.ndarray:
    """Decoded video (3, F, h, w) in [-1, 1], on any device -> uint8 (F, height, width, 3) on the host.

    Quantised on the device chunk by chunk, so only 8-bit frames cross to the host. A grid the size of
    the output is centre-cropped there; a smaller one (the tiny engine's) is scaled to cover first, on the
    host, where torch's uint8 bilinear kernel is fast.
    """
    _, num, src_h, src_w = video.shape
    size = cover_size((src_w, src_h), (width, height))
    left, top, right, bottom = center_crop_box(size, (width, height))
    out = np.empty((num, height, width, 3), dtype=np.uint8)
    host = torch.from_numpy(out)
    for start in range(0, num, _OUTPUT_CHUNK):
        chunk = video[:, start : start + _OUTPUT_CHUNK].float().permute(1, 0, 2, 3)
        chunk = ((chunk + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
        if size != (src_w, src_h):
            # Channels last: the kernel runs about 1.6 times faster, and its output is already in the
            # host's (frame, row, column, channel) order.
            chunk = torch.nn.functional.interpolate(
                chunk.cpu().contiguous(memory_format=torch.channels_last),
                size=(size[1], size[0]),
                mode="bilinear",
                align_corners=False,
            )
        host[start : start + len(chunk)].copy_(chunk[:, :, top:bottom, left:right].permute(0, 2, 3, 1))
    return out


def audio_to_output(wave: torch.Tensor, num_samples: int) -> np.ndarray:
    """First batch item as float32 (channels, num_samples) within [-1, 1] (the LTX-2.3 vocoder has no
    final tanh, and AAC wraps what it cannot represent): trimmed, or zero-padded at the end."""
    first = wave[0].float().clamp(-1.0, 1.0).cpu().numpy()
    first = first.reshape(1, -1) if first.ndim == 1 else first
    out = np.zeros((first.shape[0], num_samples), dtype=np.float32)
    keep = min(num_samples, first.shape[1])
    out[:, :keep] = first[:, :keep]
    return out


def guidance_kwargs(stage: Stage) -> dict[str, Any]:
    """A stage's guidance as the 0.42.1 pipelines take it. Every knob is set: the pipelines default to
    audio CFG 7, STG 1 and modality 3, and replace a falsy audio value with the video one."""
    g = stage.guidance
    return {
        "guidance_scale": g.cfg,
        "audio_guidance_scale": g.audio_cfg,
        "stg_scale": g.stg,
        "audio_stg_scale": g.audio_stg,
        "spatio_temporal_guidance_blocks": list(g.stg_blocks) or None,
        "modality_scale": g.modality,
        "audio_modality_scale": g.audio_modality,
        "guidance_rescale": g.rescale,
        "audio_guidance_rescale": g.audio_rescale,
    }


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
        precision: str = "bf16",
        prompt_cache_size: int = DEFAULT_PROMPT_CACHE,
        offload_text_encoder: bool = False,
        lora: FusedLora | None = None,
        lora_error: str | None = None,
        upsampler: LTX2LatentUpsamplePipeline | None = None,
        upsampler_error: str | None = None,
        reference_downscale: int = 1,
        reference_error: str | None = NO_REFERENCE_ADAPTER,
    ) -> None:
        """``reference_error`` None: the transformer carries the reference IC-LoRA, loaded as
        ``REFERENCE_ADAPTER`` and switched off; otherwise why references cannot be rendered."""
        self.name = name
        self.grid_scale = grid_scale
        self.random_weights = random_weights
        self.device = device
        # What the weights are stored in: float8 blocks, or the load dtype (float32 on a CPU).
        dtype = pipe.transformer.dtype
        self.precision = precision if precision == "fp8" else {torch.bfloat16: "bf16"}.get(dtype, "fp32")
        self.compiled = False
        self.version = recipes.detect_version(
            dict(pipe.transformer.config),
            pipe.text_encoder.config.to_dict() if pipe.text_encoder is not None else None,
        )
        self.weights = recipes.detect_weights(dict(pipe.scheduler.config))
        # The recipes give every stage its sigmas explicitly; they must reach the sampler unshifted.
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            pipe.scheduler.config, use_dynamic_shifting=False, shift_terminal=None, shift=1.0
        )
        components = {k: v for k, v in pipe.components.items() if v is not None}
        components["scheduler"] = scheduler
        # Same module objects, not copies: the weights are in memory once.
        self.pipe = _build(KeyframePipeline, components)
        self.references = _build(ReferencePipeline, components) if reference_error is None else None
        _perturbable(self.pipe.transformer, recipes.STG_BLOCKS[self.version])
        self.transformer_blocks: int | None = len(self.pipe.transformer.transformer_blocks)
        self.reference_downscale = reference_downscale
        self.reference_error = reference_error
        self.lora, self.lora_error = lora, lora_error
        self.upsampler, self.upsampler_error = upsampler, upsampler_error
        self.prompts = PromptEncoder(
            self.pipe, torch.device(device), prompt_cache_size, offload=offload_text_encoder
        )
        self.enhancer = PromptEnhancer(self.pipe, torch.device(device), self.version, self.prompts.on_device)
        self.enhance_error = self.enhancer.error
        self.sample_rate = int(self.pipe.vocoder.config.output_sampling_rate)
        self.nag = NAGState()
        install(self.pipe, self.nag)
        self._trace: Trace | None = None
        self._recorded: list[Trace] | None = None
        self._pinned: AudioLead | None = None
        self.pipe.transformer.register_forward_pre_hook(self._pin_audio, with_kwargs=True)
        self._install_trace_hooks()
        pipelines = [self.pipe, *([self.references] if self.references else [])]
        for p in (*pipelines, *([upsampler] if upsampler else [])):
            p.set_progress_bar_config(disable=True)
        for p in pipelines:
            p.on_condition = self._on_condition
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
        parts: Parts = Parts(),
        device: str | None = None,
        precision: str = "bf16",
        offload: str = "none",
        prompt_cache_size: int = DEFAULT_PROMPT_CACHE,
        compile_cache: Path | None = None,
    ) -> LTX2Engine:
        """Load a diffusers LTX-2 directory; bf16 on CUDA, float32 on CPU.

        ``parts.reference_adapter`` is an IC-LoRA ``.safetensors`` (Lightricks' or diffusers' key format)
        loaded into the transformer but active only while a render has reference images;
        ``parts.distilled_lora`` is fused while distilled stages run on dev weights.

        ``precision="fp8"`` stores the transformer blocks' attention and feed-forward weights in float8
        (``fp8.py``). ``offload`` keeps weights in host memory and moves them to the GPU per model
        (``model``) or per layer (``sequential``); both need a CUDA GPU. Without it, on a GPU, the text
        encoder waits in host memory and visits the GPU only to encode a prompt (``text.py``).

        ``compile_cache``: the transformer blocks are compiled (``compiled.py``), kept in that directory.
        """
        if precision not in PRECISIONS or offload not in OFFLOADS:
            raise ValueError(f"precision must be one of {PRECISIONS} and offload one of {OFFLOADS}")
        if compile_cache is not None and offload == "sequential":
            raise ValueError(
                "compiled blocks cannot be offloaded layer by layer: use offload 'model' or 'none'"
            )
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if offload != "none" and not device.startswith("cuda"):
            raise ValueError(f"offload={offload!r} moves weights to a CUDA GPU per use; this worker has none")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        pipe = LTX2Pipeline.from_pretrained(str(source), dtype=dtype)
        downscale = 1
        reference_error: str | None = parts.reference_error
        if parts.reference_adapter is not None:
            # Before the fp8 casting, which then leaves the LoRA's own weights in the load dtype. An adapter
            # that does not fit this checkpoint costs only the reference renders (diffusers removes a
            # half-injected adapter).
            try:
                downscale = reference_downscale(parts.reference_adapter)
                pipe.load_lora_weights(str(parts.reference_adapter), adapter_name=REFERENCE_ADAPTER)
                pipe.disable_lora()
                reference_error = None
            except Exception as exc:
                logger.exception("reference adapter %s not loaded", parts.reference_adapter)
                reference_error = (
                    f"the reference adapter {parts.reference_adapter} does not load into this checkpoint: "
                    f"{type(exc).__name__}: {exc}"
                )
        lora, lora_error = None, parts.lora_error
        if recipes.detect_weights(dict(pipe.scheduler.config)) == "distilled":
            # The LoRA is the difference between dev and distilled weights: never on distilled ones.
            lora_error = None
        elif parts.distilled_lora is not None:
            # Only read and checked against the layers here; the dev weights are copied on the first fuse.
            try:
                lora = FusedLora.load(pipe, parts.distilled_lora)
                lora_error = None
            except Exception as exc:
                logger.exception("distilled LoRA %s not loaded", parts.distilled_lora)
                lora_error = f"the distilled LoRA {parts.distilled_lora} does not fit this checkpoint: {exc}"
        if precision == "fp8":
            quantize_blocks(pipe.transformer, native_matmul(torch.device(device)))
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            for component_name, component in pipe.components.items():
                if isinstance(component, torch.nn.Module) and component_name not in HOST_COMPONENTS:
                    component.to(device)
        upsampler, upsampler_error = None, parts.upsampler_error
        if parts.upsampler is not None:
            model = LTX2LatentUpsamplerModel.from_pretrained(str(parts.upsampler), torch_dtype=dtype)
            upsampler = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=model.to(device))
        engine = cls(
            pipe,
            name=name,
            grid_scale=grid_scale,
            random_weights=random_weights,
            device=device,
            precision=precision,
            prompt_cache_size=prompt_cache_size,
            offload_text_encoder=offload == "none" and device.startswith("cuda"),
            lora=lora,
            lora_error=lora_error,
            upsampler=upsampler,
            upsampler_error=upsampler_error,
            reference_downscale=downscale,
            reference_error=reference_error,
        )
        if lora is not None and offload == "none":
            # The fast ids run on distilled weights: fused at load, so the first request does not pay for
            # the host copy of the dev weights it replaces (28 s for LTX-2 19B on an H200, BENCHMARKS.md).
            # Offloaded weights (accelerate's hooks) are left to the first render, as before.
            lora.fuse()
        if compile_cache is not None:
            engine.compile(compile_cache)
            engine.warm_up()
        return engine

    def compile(self, cache_dir: Path | None = None) -> None:
        """The transformer blocks compiled at their next call (``warm_up``)."""
        compile_blocks(self.pipe.transformer, cache_dir)
        self.compiled = True

    def warm_up(self) -> None:
        """Small clips through the compiled blocks before the first job, so that no client waits for the
        compilation (36 s on an H200): the blocks' sizes are symbolic, so jobs of every shape reuse it."""
        kind = next((k for k in WARM_UP_RECIPES if self.unavailable(k) is None), None)
        if kind is None:
            return
        for negative_prompt in WARM_UP_NEGATIVE_PROMPTS:
            plan = plan_render(
                prompt="warm-up",
                negative_prompt=negative_prompt,
                seed=0,
                duration_s=WARM_UP_SECONDS,
                resolution="720p",
                aspect_ratio="16:9",
                generate_audio=True,
                recipe=kind,
                has_first_frame=False,
                has_last_frame=False,
                grid_scale=WARM_UP_GRID_SCALE,
            )
            self.render(plan, None, None, _no_progress)

    def unavailable(self, kind: RecipeKind) -> str | None:
        """Why this engine cannot render a recipe, or None. Never an off-recipe fallback."""
        needs = recipes.recipe(kind, self.version, self.transformer_blocks).needs
        if "dev" in needs and self.weights == "distilled":
            return (
                f"the {kind} recipe samples its first stage with dev weights, and this checkpoint holds "
                "distilled weights; serve it with a dev checkpoint and its distilled LoRA "
                "(e.g. Lightricks/LTX-2)"
            )
        if "distilled" in needs and self.weights == "dev" and self.lora is None:
            return f"the {kind} recipe needs the distilled LoRA beside the dev weights: {self.lora_error}"
        if self.upsampler is None:
            return (
                f"the {kind} recipe runs two stages through the x2 latent upsampler: {self.upsampler_error}"
            )
        return None

    def render(
        self,
        plan: RenderPlan,
        first_frame: PIL.Image.Image | None,
        last_frame: PIL.Image.Image | None,
        on_step: StepCallback,
        references: Sequence[PIL.Image.Image] = (),
        lead: Lead | None = None,
    ) -> Clip:
        """Every stage of the plan's recipe, then decode and cut to the plan's exact frames and samples.
        ``Cancelled`` (raised by ``on_step``) propagates."""
        given = (
            first_frame is not None,
            last_frame is not None,
            len(references),
            0 if lead is None else len(lead.frames),
        )
        if (plan.has_first_frame, plan.has_last_frame, plan.reference_count, plan.lead_frames) != given:
            raise ValueError(
                "the plan's keyframe flags, reference_count and lead_frames must match what is passed"
            )
        if lead is not None and lead.frames.shape[1:3] != (plan.height, plan.width):
            raise ValueError(f"the lead's frames must be the output's {plan.width}x{plan.height}")
        error = self.unavailable(plan.recipe)
        if error is None and references and self.references is None:
            error = self.reference_error
        if error is not None:
            raise RuntimeError(error)
        recipe = recipes.recipe(plan.recipe, self.version, self.transformer_blocks)
        trace = Trace(
            self.version,
            self.precision,
            self.pipe.vae_spatial_compression_ratio,
            self.pipe.vae_temporal_compression_ratio,
            float(self.pipe.scheduler.config.num_train_timesteps),
            capture=self._recorded is not None,
        )
        with self._lock, torch.inference_mode(), self._tracing(trace):
            prompt = plan.prompt
            if plan.enhance_prompt:
                # An extension's rewrite reads the clip's last frame, as image-to-video reads its first.
                seen = PIL.Image.fromarray(lead.frames[-1]) if lead is not None else first_frame
                prompt = self.enhancer.rewrite(prompt, plan.seed, seen)
            video, audio = self._denoise(
                plan, prompt, recipe, first_frame, last_frame, references, lead, on_step
            )
            output = slice(plan.lead_frames, plan.lead_frames + plan.num_frames)
            frames = frames_to_output(self._decode_video(video)[0, :, output], plan.width, plan.height)
            wave = self._decode_audio(audio) if plan.generate_audio else None
        return Clip(
            frames=frames,
            audio=None if wave is None else audio_to_output(wave, plan.audio_samples(self.sample_rate)),
            sample_rate=self.sample_rate,
            recipe=trace.summary(),
            prompt=prompt if plan.enhance_prompt else None,
        )

    def _denoise(
        self,
        plan: RenderPlan,
        prompt: str,
        recipe: Recipe,
        first_frame: PIL.Image.Image | None,
        last_frame: PIL.Image.Image | None,
        references: Sequence[PIL.Image.Image],
        lead: Lead | None,
        on_step: StepCallback,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The recipe's stages in turn, on ``prompt`` (the plan's, or its enhanced rewrite); returns the last
        stage's (denormalized) video and audio latents. An extension's lead replaces the first latent
        frames, clean and never denoised (Lightricks' prefix conditioning); like any video condition it is
        not re-compressed; its sound is pinned in the audio tokens (``lead.py``)."""
        conditions = []
        pinned = None
        if lead is not None:
            conditions.append(Condition(lead_on_grid(lead.frames, plan), index=0, crf=0, kind="extend"))
            if lead.audio is not None and plan.generate_audio:
                seconds = plan.lead_frames / plan.fps
                pinned = AudioLead(self.pipe, lead.audio, lead.sample_rate, seconds, self.device)
        if first_frame is not None:
            conditions.append(Condition(conditioning_pixels(first_frame, recipe.image_crf), index=0, crf=0))
        if last_frame is not None:
            pixels = conditioning_pixels(last_frame, recipe.image_crf)
            conditions.append(
                Condition(pixels, index=-1, crf=0, kind="last_frame", pixel_frame=plan.last_frame_index)
            )
        positive = self.prompts(prompt)
        generator = torch.Generator(self.device).manual_seed(plan.seed)
        total = sum(len(stage.sigmas) for stage in recipe.stages)
        done = 0
        video: torch.Tensor | None = None
        audio: torch.Tensor | None = None
        previous: Stage | None = None
        for stage in recipe.stages:
            if previous is not None and previous.half and not stage.half:
                assert self.upsampler is not None and video is not None
                video = self.upsampler(
                    latents=video, latents_normalized=False, output_type="latent", return_dict=False
                )[0]
            self._use(stage.weights)
            assert self._trace is not None
            self._trace.begin_stage(
                stage.weights, self.lora is not None and self.lora.fused, stage.noise_scale
            )
            width, height = plan.stage_size(stage.half)

            def step_end(
                pipe: Any, i: int, t: Any, kwargs: dict[str, Any], done: int = done
            ) -> dict[str, Any]:
                on_step(done + i + 1, total)
                return kwargs

            kwargs: dict[str, Any] = {
                "prompt_embeds": positive[0],
                "prompt_attention_mask": positive[1],
                "conditions": conditions or None,
                "num_frames": plan.gen_frames,
                "height": height,
                "width": width,
                "frame_rate": float(plan.fps),
                "sigmas": list(stage.sigmas),
                "noise_scale": stage.noise_scale,
                "latents": video,
                "audio_latents": audio,
                "generator": generator,
                "use_cross_timestep": recipe.cross_timestep,
                "output_type": "latent",
                "return_dict": False,
                "callback_on_step_end": step_end,
                **guidance_kwargs(stage),
            }
            if stage.negative == "cfg":
                negative = self.prompts(plan.negative_prompt or recipes.DEFAULT_NEGATIVE_PROMPT)
                kwargs["negative_prompt_embeds"], kwargs["negative_prompt_attention_mask"] = negative
            if pinned is not None:
                self._trace.condition("extend_audio", 0, 0, 0, pinned.tokens)
            with self._negative_attention(stage, recipe, plan.negative_prompt), self._pinning(pinned):
                video, audio = self._sample(kwargs, references if previous is None else ())
            if pinned is not None:
                audio = pinned.restore(audio)
            done += len(stage.sigmas)
            previous = stage
        assert video is not None and audio is not None
        return video, audio

    def _sample(
        self, kwargs: dict[str, Any], references: Sequence[PIL.Image.Image]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One stage through the pipeline; with references, guided by the reference sheet: one still image
        the size the adapter wants, looped over every frame (the Ingredients IC-LoRA was trained on a
        still sheet played as a video)."""
        if not references:
            out: tuple[torch.Tensor, torch.Tensor] = self.pipe(**kwargs)
            return out
        assert self.references is not None
        width, height = kwargs["width"], kwargs["height"]
        f, grid = self.reference_downscale, self.references.vae_spatial_compression_ratio
        # The pipeline takes the reference at (w // f, h // f) rounded down to its grid, cropping the
        # rest; a sheet made at that size is used whole.
        sheet = reference_sheet(
            references, max(grid, width // f // grid * grid), max(grid, height // f // grid * grid)
        )
        # On the transformer every pipeline shares: only under self._lock, and off again after.
        self.references.enable_lora()
        try:
            out = self.references(
                reference_conditions=[LTX2ReferenceCondition(frames=[sheet] * kwargs["num_frames"])],
                reference_downscale_factor=f,
                **kwargs,
            )
        finally:
            self.references.disable_lora()
        return out

    def _use(self, weights: str) -> None:
        """The transformer on the stage's weights: the dev checkpoint with or without its distilled LoRA."""
        if self.lora is None:
            return
        if weights == "distilled":
            self.lora.fuse()
        else:
            self.lora.restore()

    @contextmanager
    def _negative_attention(
        self, stage: Stage, recipe: Recipe, negative_prompt: str | None
    ) -> Iterator[None]:
        if stage.negative != "nag" or not negative_prompt:
            yield
            return
        self.nag.nag, self.nag.negative = recipe.nag, self.prompts(negative_prompt)
        try:
            yield
        finally:
            self.nag.clear()

    @contextmanager
    def _pinning(self, pinned: AudioLead | None) -> Iterator[None]:
        self._pinned = pinned
        try:
            yield
        finally:
            self._pinned = None

    def _pin_audio(self, module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        return None if self._pinned is None else (args, self._pinned.pin(kwargs))

    @contextmanager
    def recording(self) -> Iterator[list[Trace]]:
        """The full traces, with every transformer call's per-token timesteps and positions, of the renders
        made inside (what the parity tests compare with Lightricks' own pipelines)."""
        self._recorded = []
        try:
            yield self._recorded
        finally:
            self._recorded = None

    @contextmanager
    def _tracing(self, trace: Trace) -> Iterator[None]:
        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self._trace = trace
        try:
            yield
        finally:
            self._trace = None
            if self._recorded is not None:
                self._recorded.append(trace)
            self.nag.clear()
            if cuda:
                trace.peak_gpu_bytes = int(torch.cuda.max_memory_allocated(self.device))

    def _install_trace_hooks(self) -> None:
        blocks = self.pipe.transformer.transformer_blocks

        def after(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
            if self._trace is not None:
                asked = kwargs.get("spatio_temporal_guidance_blocks") or ()
                stg = any(b < len(blocks) and blocks[b].perturbed_attn for b in asked)
                self._trace.transformer_call(kwargs, nag=self.nag.steering and len(blocks) > 0, stg=stg)

        self.pipe.transformer.register_forward_hook(after, with_kwargs=True)

    def _on_condition(self, kind: str, width: int, height: int, pixel_frame: int | None, frames: int) -> None:
        if self._trace is not None:
            self._trace.condition(kind, width, height, pixel_frame, frames)

    def _decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Denormalized latents -> (batch, 3, frames, h, w) in [-1, 1], in upstream's decoding tiles. Only
        the decode is tiled: conditions are encoded whole, as upstream encodes them."""
        vae = self.pipe.vae
        latents = latents.to(vae.dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            # The pipelines' default decode_timestep 0 and no decode noise.
            timestep = torch.zeros(latents.shape[0], device=latents.device, dtype=latents.dtype)
        vae.enable_tiling(**VAE_TILING)
        vae.use_framewise_decoding = True
        try:
            decoded: torch.Tensor = vae.decode(latents, timestep, return_dict=False)[0]
        finally:
            vae.disable_tiling()
            vae.use_framewise_decoding = False
        return decoded

    def _decode_audio(self, latents: torch.Tensor) -> torch.Tensor:
        audio_vae = self.pipe.audio_vae
        mel = audio_vae.decode(latents.to(audio_vae.dtype), return_dict=False)[0]
        wave: torch.Tensor = self.pipe.vocoder(mel)
        return wave
