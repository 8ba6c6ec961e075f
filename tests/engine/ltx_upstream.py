"""Record what Lightricks' reference pipelines (ltx-pipelines 1.0.0 on ltx-core 1.0.0) give their transformer.

``record_upstream`` runs ``DistilledPipeline`` or ``TI2VidTwoStagesPipeline`` unmodified on this CPU, with
tiny random-weight ltx-core modules built by ltx-core's own configurators in place of the checkpoints, and
records, per denoising stage and per transformer call, the structure of the call: sigma, guidance pass
(negative context, perturbations), latent grid, token counts, per-token timesteps and positions. Pixels are
not recorded (the RNGs of the two implementations differ): only what a structural parity test can compare.

What is stood in for, and why:

- the pipeline's ``ModelLedger`` (checkpoint loader) -> ``_TinyLedger``, returning the tiny modules;
- ``encode_prompts`` (Gemma + embeddings connector) -> tiny random contexts of the right type and shape;
- ``decode_video``/``decode_audio`` (VAE decoder, vocoder) -> skipped, no pixels are needed;
- ``torch.cuda.synchronize``/``empty_cache`` -> no-ops while a run lasts (the pipelines call them
  unconditionally), and the pipelines' ``cleanup_memory`` (``gc.collect()`` + those) -> a no-op;
- ``torchaudio`` -> a stub module while ``ltx_core.model.audio_vae`` is first imported (its ``ops`` module
  imports it at load, nothing on these paths uses it; the real package must not be installed beside
  torch 2.13).

Everything else (conditioning, noising, sigma schedules, guiders, perturbations, the upsampler call, the
transformer itself) is ltx-core/ltx-pipelines code.

``summarize`` derives a comparable digest from a record using only the recorded tensors, so the same
function can digest records of openreel's diffusers transformer calls (same ``[B, 3, T, 2]`` coords layout,
per-token timesteps ``sigma * (1 - conditioning_mask)``). It imports nothing from ltx-core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.machinery
import inspect
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from PIL import Image

PIPELINES = ("distilled", "two_stage")

# Tiny stand-in sizes. Latent channels stay 128 (ltx_pipelines.utils.constants.VIDEO_LATENT_CHANNELS; audio
# latents patchify to 8 channels x 16 mel bins = 128 too); everything inside the modules is shrunk.
TINY_LAYERS = 30  # enough for the LTX-2.0 STG block (29) to exist
TINY_CAPTION_CHANNELS = 16
TINY_CONTEXT_TOKENS = 8

_TRANSFORMER_CONFIG: dict[str, Any] = {
    "transformer": {
        # every key LTXModelConfigurator.from_config checks, at its expected value
        "dropout": 0.0,
        "attention_bias": True,
        "num_vector_embeds": None,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": 1000,
        "use_linear_projection": False,
        "only_cross_attention": False,
        "cross_attention_norm": True,
        "double_self_attention": False,
        "upcast_attention": False,
        "standardization_norm": "rms_norm",
        "norm_elementwise_affine": False,
        "qk_norm": "rms_norm",
        "positional_embedding_type": "rope",
        "use_audio_video_cross_attention": True,
        "share_ff": False,
        "av_cross_ada_norm": True,
        "use_middle_indices_grid": True,
        # tiny sizes (LTX-2.0 layout: caption projections live in the transformer)
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 128,
        "out_channels": 128,
        "num_layers": TINY_LAYERS,
        "cross_attention_dim": 32,
        "caption_channels": TINY_CAPTION_CHANNELS,
        "audio_num_attention_heads": 2,
        "audio_attention_head_dim": 8,
        "audio_in_channels": 128,
        "audio_out_channels": 128,
        "audio_cross_attention_dim": 16,
    }
}

_VIDEO_ENCODER_CONFIG: dict[str, Any] = {
    "vae": {
        "dims": 3,
        "in_channels": 3,
        "latent_channels": 128,
        "patch_size": 4,
        "norm_layer": "pixel_norm",
        "latent_log_var": "uniform",
        # x4 (patchify), then x2 in space, x2 in time, 2 * x2 in all:
        # H/32, W/32, 1 + (F - 1) / 8, like the real encoder
        "encoder_blocks": [
            ["compress_space_res", {"multiplier": 1}],
            ["compress_time_res", {"multiplier": 1}],
            ["compress_all_res", {"multiplier": 1}],
            ["compress_all_res", {"multiplier": 1}],
        ],
    }
}

_UPSAMPLER_CONFIG: dict[str, Any] = {
    "in_channels": 128,
    "mid_channels": 32,
    "num_blocks_per_stage": 1,
    "dims": 3,
    "spatial_upsample": True,
    "temporal_upsample": False,
    "spatial_scale": 2.0,
    "rational_resampler": False,
}


# ----------------------------------------------------------------------------------------------------------
# Imports and process-wide patches


def _import_ltx() -> dict[str, types.ModuleType]:
    """Import the ltx modules this recorder needs, with a ``torchaudio`` stub present only while
    ``ltx_core.model.audio_vae`` is first imported. Transformers (and ltx-core's Gemma wrappers) are imported
    before the stub goes in, so transformers' cached ``is_torchaudio_available`` never sees it."""
    # pulls transformers' Gemma 3 classes in while no stub is present
    import ltx_core.text_encoders.gemma

    if "ltx_core.model.audio_vae" not in sys.modules:
        had = "torchaudio" in sys.modules
        if not had:
            stub = types.ModuleType("torchaudio")
            stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
            sys.modules["torchaudio"] = stub
        try:
            import ltx_core.model.audio_vae  # noqa: F401
        finally:
            if not had:
                sys.modules.pop("torchaudio", None)

    import ltx_pipelines.distilled
    import ltx_pipelines.ti2vid_two_stages
    import ltx_pipelines.utils.samplers

    return {
        "distilled": ltx_pipelines.distilled,
        "two_stage": ltx_pipelines.ti2vid_two_stages,
        "samplers": ltx_pipelines.utils.samplers,
    }


@contextlib.contextmanager
def _patched(target: object, name: str, value: object) -> Iterator[None]:
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


def _no_op(*_args: object, **_kwargs: object) -> None:
    return None


def _no_progress(iterable: Any, *_args: object, **_kwargs: object) -> Any:
    return iterable


# ----------------------------------------------------------------------------------------------------------
# Tiny modules


def _fill_(module: torch.nn.Module, seed: int, dtype: torch.dtype) -> torch.nn.Module:
    """Materialize (meta -> CPU) and fill every parameter from a private generator; returns an eval module."""
    module.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return module.to(dtype).eval()


@functools.cache
def _tiny_modules() -> dict[str, torch.nn.Module]:
    """Build the tiny transformer, video encoder and upsampler once per process (weights are read-only)."""
    from ltx_core.model.transformer import LTXModelConfigurator
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    from ltx_core.model.video_vae import VideoEncoderConfigurator

    with torch.random.fork_rng(
        devices=[]
    ):  # module constructors draw from the global RNG; leave it untouched
        # float32: bf16 matmuls are ~10x slower on CPUs without bf16 units (_RecordingTransformer casts)
        velocity_model = _fill_(LTXModelConfigurator.from_config(_TRANSFORMER_CONFIG), 1, torch.float32)
        video_encoder = _fill_(VideoEncoderConfigurator.from_config(_VIDEO_ENCODER_CONFIG), 2, torch.float32)
        upsampler = _fill_(LatentUpsamplerConfigurator.from_config(_UPSAMPLER_CONFIG), 3, torch.float32)
    # The pipelines feed bf16 pixels and latents straight into these and normalize with the encoder's
    # statistics: bf16 in and out, like their ledger's, but float32 inside (a CPU without bf16 units runs
    # a bf16 3D convolution about 100x slower: 43 s for one 640x384 image).
    stats = video_encoder.per_channel_statistics.to(torch.bfloat16)
    with torch.no_grad():
        stats.get_buffer("std-of-means").fill_(1.0)
        stats.get_buffer("mean-of-means").fill_(0.0)
    for module in (video_encoder, upsampler):
        module.register_forward_pre_hook(lambda _module, args: tuple(a.float() for a in args))
        module.register_forward_hook(lambda _module, _args, out: out.to(torch.bfloat16))
    return {"velocity_model": velocity_model, "video_encoder": video_encoder, "upsampler": upsampler}


# ----------------------------------------------------------------------------------------------------------
# Recording


class _Recorder:
    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []
        self.upsampled = 0
        self.negative_contexts: list[torch.Tensor] = []

    def is_negative(self, context: torch.Tensor) -> bool:
        return any(context is negative for negative in self.negative_contexts)

    def wrap_denoise(self, real: Callable[..., Any]) -> Callable[..., Any]:
        from ltx_core.types import VideoLatentShape
        from ltx_pipelines.utils.constants import VIDEO_LATENT_CHANNELS, VIDEO_SCALE_FACTORS

        signature = inspect.signature(real)

        def denoise_audio_video(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            shape = bound.arguments["output_shape"]
            grid = VideoLatentShape.from_pixel_shape(
                shape, latent_channels=VIDEO_LATENT_CHANNELS, scale_factors=VIDEO_SCALE_FACTORS
            )
            self.stages.append(
                {
                    "index": len(self.stages),
                    "width": int(shape.width),
                    "height": int(shape.height),
                    "frames": int(shape.frames),
                    "fps": float(shape.fps),
                    "noise_scale": float(bound.arguments["noise_scale"]),
                    "sigmas": [float(s) for s in bound.arguments["sigmas"].detach().float().cpu()],
                    "video_grid": [grid.frames, grid.height, grid.width],
                    "conditionings": [type(c).__name__ for c in bound.arguments["conditionings"]],
                    "calls": [],
                }
            )
            return real(*args, **kwargs)

        return denoise_audio_video

    def wrap_upsample(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def upsample_video(*args: Any, **kwargs: Any) -> Any:
            self.upsampled += 1
            return real(*args, **kwargs)

        return upsample_video

    def record_call(self, video: Any, audio: Any, perturbations: Any) -> None:
        if not self.stages:
            raise RuntimeError("transformer called outside denoise_audio_video")
        stage = self.stages[-1]
        names: list[str] = []
        blocks: dict[str, list[int] | None] = {}
        if perturbations is not None:
            first_row = perturbations.perturbations[0]
            for perturbation in first_row.perturbations or []:
                names.append(perturbation.type.name)
                blocks[perturbation.type.name] = (
                    None if perturbation.blocks is None else [int(b) for b in perturbation.blocks]
                )
        grid = stage["video_grid"]
        stage["calls"].append(
            {
                "sigma": float(video.sigma),
                "batch_rows": int(video.latent.shape[0]),
                "perturbations": names,
                "perturbation_blocks": blocks,
                "video_grid": list(grid),
                "base_tokens": grid[0] * grid[1] * grid[2],
                "tokens": int(video.latent.shape[1]),
                "video_timesteps": video.timesteps[0].detach().float().cpu().reshape(-1).clone(),
                "video_positions": video.positions[0].detach().float().cpu().clone(),
                "video_positions_dtype": str(video.positions.dtype).removeprefix("torch."),
                "video_attention_mask": video.attention_mask is not None,
                "audio_tokens": int(audio.latent.shape[1]) if audio is not None else 0,
                "audio_timesteps_zero": bool(audio is not None and (audio.timesteps == 0).all()),
                "context_is_negative": self.is_negative(video.context),
                "audio_context_is_negative": audio is not None and self.is_negative(audio.context),
            }
        )


def _as_float32(modality: Any) -> Any:
    if modality is None:
        return None
    changes = {
        field.name: value.float()
        for field in dataclasses.fields(modality)
        if isinstance(value := getattr(modality, field.name), torch.Tensor) and value.is_floating_point()
    }
    return dataclasses.replace(modality, **changes)


class _RecordingTransformer:
    """What the stand-in ledger's ``transformer()`` returns: records each call as given, then runs the tiny
    ``X0Model`` in float32 and hands back outputs in the dtype of the latents it was given (bf16)."""

    def __init__(self, model: torch.nn.Module, recorder: _Recorder) -> None:
        self.model = model
        self.recorder = recorder

    def __call__(self, video: Any, audio: Any, perturbations: Any) -> Any:
        self.recorder.record_call(video, audio, perturbations)
        out_video, out_audio = self.model(
            video=_as_float32(video), audio=_as_float32(audio), perturbations=perturbations
        )
        return (
            None if out_video is None else out_video.to(video.latent.dtype),
            None if out_audio is None else out_audio.to(audio.latent.dtype),
        )


class _TinyLedger:
    """Stands in for ``ltx_pipelines.utils.model_ledger.ModelLedger``: same constructor keywords, same factory
    methods (the ones the two pipelines call), tiny modules instead of checkpoint weights."""

    def __init__(self, recorder: _Recorder, **kwargs: Any) -> None:
        self.recorder = recorder
        self.kwargs = kwargs
        self.loras = tuple(kwargs.get("loras") or ())

    def with_additional_loras(self, loras: Any) -> _TinyLedger:
        return _TinyLedger(self.recorder, **{**self.kwargs, "loras": (*self.loras, *(loras or ()))})

    def with_loras(self, loras: Any) -> _TinyLedger:
        return _TinyLedger(self.recorder, **{**self.kwargs, "loras": tuple(loras or ())})

    def transformer(self) -> _RecordingTransformer:
        from ltx_core.model.transformer import X0Model

        return _RecordingTransformer(X0Model(_tiny_modules()["velocity_model"]).eval(), self.recorder)

    def video_encoder(self) -> torch.nn.Module:
        return _tiny_modules()["video_encoder"]

    def spatial_upsampler(self) -> torch.nn.Module:
        return _tiny_modules()["upsampler"]

    def text_encoder(self) -> None:
        raise AssertionError("encode_prompts is stood in for; the text encoder must not be loaded")

    def gemma_embeddings_processor(self) -> None:
        raise AssertionError("encode_prompts is stood in for; the embeddings processor must not be loaded")

    def video_decoder(self) -> None:
        return None  # decode_video is stood in for

    def audio_decoder(self) -> None:
        return None  # decode_audio is stood in for

    def vocoder(self) -> None:
        return None


def _encode_prompts_stub(recorder: _Recorder) -> Callable[..., list[Any]]:
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessorOutput

    def encode_prompts(prompts: list[str], model_ledger: object, **_kwargs: object) -> list[Any]:
        generator = torch.Generator().manual_seed(1234)
        outputs = []
        for index, _prompt in enumerate(prompts):
            shape = (1, TINY_CONTEXT_TOKENS, TINY_CAPTION_CHANNELS)
            video = torch.randn(shape, generator=generator).to(torch.bfloat16)
            audio = torch.randn(shape, generator=generator).to(torch.bfloat16)
            if index > 0:  # the two-stage pipeline encodes [prompt, negative_prompt]
                recorder.negative_contexts += [video, audio]
            mask = torch.ones(1, TINY_CONTEXT_TOKENS, dtype=torch.int64)
            outputs.append(
                EmbeddingsProcessorOutput(video_encoding=video, audio_encoding=audio, attention_mask=mask)
            )
        return outputs

    return encode_prompts


def record_upstream(
    pipeline: str,
    *,
    width: int,
    height: int,
    num_frames: int,
    fps: float,
    images: list[tuple[Image.Image, int]],
    seed: int = 0,
    num_inference_steps: int = 2,
    prompt: str = "a red fox running through fresh snow",
    negative_prompt: str = "blurry, low quality",
) -> dict[str, Any]:
    """Run an ltx-pipelines 1.0.0 pipeline on tiny modules and record every transformer call.

    ``width``/``height`` are the final (stage-2) size, multiples of 64; stage 1 runs at half of it.
    ``images`` are (image, pixel frame index) pairs, passed as ``ImageConditioningInput(path, frame_idx,
    strength=1.0, crf=33)``. ``num_inference_steps`` is used by ``"two_stage"`` only (``"distilled"`` has
    fixed schedules). Returns ``{"stages": [...], "upsampled": n}``; see the module docstring and
    ``summarize``.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    modules = _import_ltx()
    from ltx_pipelines.utils.args import ImageConditioningInput
    from ltx_pipelines.utils.constants import LTX_2_PARAMS

    pipeline_module = modules[pipeline]
    recorder = _Recorder()

    def ledger_factory(**kwargs: Any) -> _TinyLedger:
        return _TinyLedger(recorder, **kwargs)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ltx-upstream-")))
        conditioning = []
        for index, (image, frame_idx) in enumerate(images):
            path = tmp / f"image{index}.png"
            image.convert("RGB").save(path)
            conditioning.append(ImageConditioningInput(str(path), int(frame_idx), strength=1.0, crf=33))

        for target, name, value in (
            (torch.cuda, "synchronize", _no_op),
            (torch.cuda, "empty_cache", _no_op),
            (pipeline_module, "ModelLedger", ledger_factory),
            (pipeline_module, "encode_prompts", _encode_prompts_stub(recorder)),
            (
                pipeline_module,
                "denoise_audio_video",
                recorder.wrap_denoise(pipeline_module.denoise_audio_video),
            ),
            (pipeline_module, "upsample_video", recorder.wrap_upsample(pipeline_module.upsample_video)),
            (pipeline_module, "cleanup_memory", _no_op),  # gc.collect() + cuda calls: time only
            (pipeline_module, "vae_decode_video", _no_op),
            (pipeline_module, "vae_decode_audio", _no_op),
            (modules["samplers"], "tqdm", _no_progress),
        ):
            stack.enter_context(_patched(target, name, value))
        stack.enter_context(torch.inference_mode())

        if pipeline == "distilled":
            runner = pipeline_module.DistilledPipeline(
                distilled_checkpoint_path="tiny-distilled.safetensors",
                gemma_root="tiny-gemma",
                spatial_upsampler_path="tiny-upsampler.safetensors",
                loras=[],
            )
            runner(
                prompt=prompt,
                seed=seed,
                height=height,
                width=width,
                num_frames=num_frames,
                frame_rate=fps,
                images=conditioning,
            )
        else:
            runner = pipeline_module.TI2VidTwoStagesPipeline(
                checkpoint_path="tiny-dev.safetensors",
                distilled_lora=[],
                spatial_upsampler_path="tiny-upsampler.safetensors",
                gemma_root="tiny-gemma",
                loras=[],
            )
            runner(
                prompt=prompt,
                negative_prompt=negative_prompt,
                seed=seed,
                height=height,
                width=width,
                num_frames=num_frames,
                frame_rate=fps,
                num_inference_steps=num_inference_steps,
                video_guider_params=LTX_2_PARAMS.video_guider_params,
                audio_guider_params=LTX_2_PARAMS.audio_guider_params,
                images=conditioning,
            )

    return {"stages": recorder.stages, "upsampled": recorder.upsampled}


# ----------------------------------------------------------------------------------------------------------
# Digest (no ltx-core imports: reusable on openreel's records)


def _round(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


def _guidance_kinds(call: dict[str, Any]) -> set[str]:
    kinds = set()
    if call.get("context_is_negative"):
        kinds.add("cfg")
    perturbations = call.get("perturbations") or []
    if any(name.endswith("SELF_ATTN") for name in perturbations):
        kinds.add("stg")
    if any(name.endswith("CROSS_ATTN") for name in perturbations):
        kinds.add("modality")
    return kinds


def _keyframes(call: dict[str, Any]) -> list[dict[str, Any]]:
    """Appended tokens (beyond the base grid), grouped into runs of equal temporal [start, end] coordinates
    (one image keyframe = one latent frame = one run)."""
    base = call["base_tokens"]
    positions = call["video_positions"][:, base:, :]
    timesteps = call["video_timesteps"][base:]
    groups: list[dict[str, Any]] = []
    start = 0
    count = positions.shape[1]
    for index in range(1, count + 1):
        if index == count or not torch.equal(positions[0, index], positions[0, start]):
            time_start, time_end = (float(v) for v in positions[0, start])
            groups.append(
                {
                    "tokens": index - start,
                    "time_start_s": _round(time_start),
                    "time_end_s": _round(time_end),
                    "timesteps_zero": bool((timesteps[start:index] == 0).all()),
                }
            )
            start = index
    return groups


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """Per stage: size, frames, sigmas, noise scale, passes per step, guidance kinds, replaced latent frames,
    appended keyframes. Derived from the recorded tensors only."""
    stages = []
    for stage in record["stages"]:
        calls = stage["calls"]
        passes: list[int] = []
        previous = None
        for call in calls:
            if passes and call["sigma"] == previous:
                passes[-1] += 1
            else:
                passes.append(1)
            previous = call["sigma"]
        kinds: set[str] = set()
        for call in calls:
            kinds |= _guidance_kinds(call)
        summary: dict[str, Any] = {
            "index": stage["index"],
            "width": stage["width"],
            "height": stage["height"],
            "frames": stage["frames"],
            "sigmas": [_round(s) for s in stage["sigmas"]],
            "noise_scale": _round(stage["noise_scale"]),
            "calls": len(calls),
            "passes_per_step": passes,
            "guidance": sorted(kinds),
            "replaced_latent_frames": [],
            "keyframes": [],
        }
        if calls:
            first = calls[0]
            f_lat, h_lat, w_lat = first["video_grid"]
            base = first["base_tokens"]
            zero = (first["video_timesteps"][:base] == 0).reshape(f_lat, h_lat * w_lat).all(dim=1)
            summary.update(
                {
                    "video_grid": list(first["video_grid"]),
                    "base_tokens": base,
                    "tokens": first["tokens"],
                    "audio_tokens": first["audio_tokens"],
                    "batch_rows": sorted({call["batch_rows"] for call in calls}),
                    "replaced_latent_frames": [int(i) for i in torch.nonzero(zero).flatten()],
                    "keyframes": _keyframes(first),
                }
            )
        stages.append(summary)
    return {"stages": stages, "upsampled": record.get("upsampled", 0)}
