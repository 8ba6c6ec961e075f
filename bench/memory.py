"""Predicted peak GPU memory of whole jobs on the full-size LTX-2 models, without a GPU.

Where ``memory_phases.py`` measures each component on its own, this follows one job through openreel's
engine: the recipe's stages (``engine/recipes.py``) at the plan's sizes (``engine/plan.py``), with the
engine's residency. Every component but the text encoder stays on the GPU; Gemma visits it to encode a
prompt that is not cached and leaves (``engine/text.py``), and the prompt embeddings stay for the render;
each stage encodes its frame conditions, runs the connectors and one denoising step (every step of a stage
allocates the same) with the latents, masks and clean latents the pipeline keeps in float32; the x2
upsampler; then the tiled VAE decode, the output frames converted 16 at a time, and the audio decode.
Built and run under ``fake_gpu.FakeGPU``: fake weights of the published configs, no memory, no compute.

Not in the figures: the CUDA context (~0.5 GiB), cuBLAS/cuDNN workspaces and allocator fragmentation
(``memory_reserved`` above ``memory_allocated``); leave a few GiB for them.

    python bench/memory.py                                   # LTX-2.0 and 2.3, every job shape, bf16 and fp8
    python bench/memory.py --checkpoint LTX-2.3-22B-dev --precision bf16 --sizes 1080p:8
"""

from __future__ import annotations

import argparse
import gc
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_gpu import FakeGPU, GiB, build_component

from openreel.engine.fp8 import quantize_blocks
from openreel.engine.ltx2 import VAE_TILING
from openreel.engine.nag import NAGState, install
from openreel.engine.plan import RenderPlan, plan_render
from openreel.engine.recipes import Recipe, RecipeKind, detect_version, recipe
from openreel.engine.text import placement

TEXT_TOKENS = 1024  # the pipelines pad prompts to max_sequence_length
RESIDENT = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "latent_upsampler")
# (first frame, last frame, reference sheet)
SHAPES = {
    "text": (False, False, False),
    "image": (True, False, False),
    "image+last": (True, True, False),
    "image+refs": (True, False, True),
}
_CHUNK = 16  # engine/ltx2.py _OUTPUT_CHUNK


@dataclass
class Job:
    checkpoint: str
    kind: RecipeKind
    resolution: str
    seconds: int
    shape: str
    precision: str = "bf16"
    negative_prompt: bool = False
    card_gib: float = 80.0  # the GPU's memory, which decides how the text encoder visits it


@dataclass
class Prediction:
    job: Job
    weights: int = 0
    peak: int = 0
    text_placement: str = "visit"
    phases: dict[str, int] = field(default_factory=dict)


class _Job:
    def __init__(self, gpu: FakeGPU, job: Job) -> None:
        self.gpu, self.job, self.result = gpu, job, Prediction(job)
        self.dev = gpu.device

    def empty(self, *shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return torch.empty(*shape, dtype=dtype, device=self.dev)

    def phase(self, name: str):  # type: ignore[no-untyped-def]
        return self.gpu.phase(name)

    def note(self, name: str, record) -> None:  # type: ignore[no-untyped-def]
        self.result.phases[name] = record.peak

    def run(self) -> Prediction:
        job = self.job
        parts = {name: build_component(job.checkpoint, name) for name in RESIDENT}
        if job.precision == "fp8":
            quantize_blocks(parts["transformer"], "scaled_mm")
        gc.collect()
        self.result.weights = self.gpu.live
        version = detect_version(dict(parts["transformer"].config), _text_config(job.checkpoint))
        plan_ = plan_render(
            prompt="p",
            negative_prompt="n" if job.negative_prompt else None,
            seed=0,
            duration_s=job.seconds,
            resolution=job.resolution,
            aspect_ratio="16:9",
            generate_audio=True,
            recipe=job.kind,
            has_first_frame=SHAPES[job.shape][0],
            has_last_frame=SHAPES[job.shape][1],
        )
        the_recipe = recipe(job.kind, version)
        prompts = self._encode_prompts(the_recipe, plan_)
        self.gpu.reset_peak()
        video, audio = self._stages(parts, the_recipe, plan_, prompts)
        self._decode(parts, plan_, video, audio)
        self.result.peak = max(self.gpu.peak, self.result.phases["text encoder"])
        return self.result

    def _encode_prompts(self, the_recipe: Recipe, plan_: RenderPlan) -> list[torch.Tensor]:
        """Gemma comes, encodes each prompt of the job (B=1, as PromptEncoder does), and goes: whole, or
        layer by layer where the card has no room for it (text.placement). A streamed visit holds one
        layer at a time: the largest layer's weights stand in for the whole encoder."""
        negative = plan_.negative_prompt is not None or any(s.negative == "cfg" for s in the_recipe.stages)
        before = self.gpu.live
        with self.phase("text encoder") as record:
            encoder = build_component(self.job.checkpoint, "text_encoder")
            size = self.gpu.live - before
            largest = max(
                sum(t.numel() * t.element_size() for t in (*m.parameters(False), *m.buffers(False)))
                for m in encoder.modules()
            )
            prompts = [self._encode(encoder) for _ in range(2 if negative else 1)]
            del encoder
            gc.collect()
        how = placement(int(self.job.card_gib * GiB) - before, size)
        self.result.text_placement = how
        self.result.phases["text encoder"] = record.peak - (size - largest if how == "stream" else 0)
        return prompts

    def _encode(self, encoder: torch.nn.Module) -> torch.Tensor:
        ids = self.empty(1, TEXT_TOKENS, dtype=torch.long)
        outputs = encoder(input_ids=ids, attention_mask=ids, output_hidden_states=True)
        return torch.stack(outputs.hidden_states, dim=-1).flatten(2, 3)

    def _stages(
        self,
        parts: dict[str, torch.nn.Module],
        the_recipe: Recipe,
        plan_: RenderPlan,
        prompts: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        transformer, connectors, vae = parts["transformer"], parts["connectors"], parts["vae"]
        # The engine's NAG processors, steering while a stage takes the negative prompt through NAG.
        nag_state = NAGState()
        install(types.SimpleNamespace(transformer=transformer, connectors=connectors), nag_state)
        latent_frames = (plan_.gen_frames - 1) // 8 + 1
        audio_tokens = round(plan_.gen_frames / plan_.fps * 16000 / 160 / 4)
        audio = self.empty(1, audio_tokens, 128, dtype=torch.float32)
        video = None
        for index, stage in enumerate(the_recipe.stages):
            name = f"stage {index + 1}"
            width, height = plan_.stage_size(stage.half)
            with self.phase(name) as record:
                if video is not None:
                    video = parts["latent_upsampler"](video.to(torch.bfloat16)).float()
                # The first frame replaces latent frame 0; the last frame is appended as keyframe tokens.
                keyframes = []
                for appended in (False,) * plan_.has_first_frame + (True,) * plan_.has_last_frame:
                    latent = vae.encode(self.empty(1, 3, 1, height, width)).latent_dist.mode()
                    if appended:
                        keyframes.append(latent.flatten(2).transpose(1, 2))
                grid = latent_frames * (height // 32) * (width // 32)
                tokens = grid + sum(k.shape[1] for k in keyframes)
                if SHAPES[self.job.shape][2] and index == 0:
                    # The reference sheet, looped over every frame, at the output's size (the Ingredients
                    # adapter's downscale factor is 1), guides stage 1 only.
                    vae.encode(self.empty(1, 3, plan_.gen_frames, height, width)).latent_dist.mode()
                    tokens += grid
                cfg = "cfg" in stage.guidance.names
                nag = stage.negative == "nag" and plan_.negative_prompt is not None
                rows = 2 if cfg else 1
                text = torch.cat(prompts[:rows]) if cfg else prompts[0]
                mask = self.empty(rows, TEXT_TOKENS, dtype=torch.long)
                video_ctx, audio_ctx, ctx_mask = connectors(text, mask)
                if nag:
                    neg_video, neg_audio, neg_mask = connectors(prompts[1], mask)
                    nag_state.nag, nag_state.split = the_recipe.nag, video_ctx.shape[1]
                    video_ctx = torch.cat([video_ctx, neg_video], dim=1)
                    audio_ctx = torch.cat([audio_ctx, neg_audio], dim=1)
                    ctx_mask = torch.cat([ctx_mask, neg_mask], dim=1)
                # What prepare_latents keeps for the loop (float32): latents, mask, clean latents.
                latents = self.empty(1, tokens, 128, dtype=torch.float32)
                kept = [latents, self.empty(rows, tokens, 1, dtype=torch.float32), torch.empty_like(latents)]
                timestep = self.empty(rows, tokens, dtype=torch.float32)  # one per token: conditioned
                sigma = self.empty(rows, dtype=torch.float32)
                with _one_block(transformer):
                    out = transformer(
                        hidden_states=latents.expand(rows, -1, -1).to(torch.bfloat16),
                        audio_hidden_states=audio.expand(rows, -1, -1).to(torch.bfloat16),
                        encoder_hidden_states=video_ctx,
                        audio_encoder_hidden_states=audio_ctx,
                        timestep=timestep,
                        audio_timestep=sigma,
                        sigma=sigma,
                        encoder_attention_mask=ctx_mask,
                        audio_encoder_attention_mask=ctx_mask,
                        num_frames=latent_frames,
                        height=height // 32,
                        width=width // 32,
                        fps=float(plan_.fps),
                        audio_num_frames=audio_tokens,
                        # With keyframe tokens appended, the pipeline passes every token's coordinates.
                        video_coords=self.empty(rows, 3, tokens, 2, dtype=torch.float32),
                        use_cross_timestep=the_recipe.cross_timestep,
                        return_dict=False,
                    )
                nag_state.clear()
                del out, kept, video_ctx, audio_ctx, ctx_mask, text, keyframes
                video = self.empty(1, 128, latent_frames, height // 32, width // 32, dtype=torch.float32)
                gc.collect()
            self.note(name, record)
        assert video is not None
        return video, audio

    def _decode(
        self, parts: dict[str, torch.nn.Module], plan_: RenderPlan, video: torch.Tensor, audio: torch.Tensor
    ) -> None:
        vae = parts["vae"]
        vae.enable_tiling(**VAE_TILING)
        vae.use_framewise_decoding = True
        _blend_one_row(vae)
        with self.phase("decode") as record:
            decoded = vae.decode(video.to(torch.bfloat16), return_dict=False)[0]
            del video
            chunk = decoded[:, :, :_CHUNK].float()
            frames = ((chunk + 1) * 127.5).to(torch.uint8)
            del chunk, frames, decoded
            bins = parts["audio_vae"].config.mel_bins // 4
            channels = parts["audio_vae"].config.latent_channels
            latent = self.empty(1, channels, audio.shape[1], bins)
            parts["vocoder"](parts["audio_vae"].decode(latent, return_dict=False)[0])
            gc.collect()
        self.note("decode", record)


@contextmanager
def _one_block(transformer: torch.nn.Module) -> Iterator[None]:
    """One block of the stack called instead of all: the blocks share one config, this bench perturbs
    none of them (no STG), and each frees its activations before the next starts, so the first reaches
    the stack's peak (the 1080p·8 s prediction's stages: 27 CPU-s for 96 blocks). The others stay built
    and resident."""
    blocks = transformer.transformer_blocks
    transformer.transformer_blocks = torch.nn.ModuleList(blocks[:1])
    try:
        yield
    finally:
        transformer.transformer_blocks = blocks


def _blend_one_row(vae: torch.nn.Module) -> None:
    """diffusers blends overlapping tiles one row (column, frame) at a time in Python, and every row
    allocates temporaries of one shape and frees them before the next: the first row alone reaches the
    loop's peak, with a fraction of its dispatches (the blends were half of the 1080p·8 s decode's 45
    CPU-s). Same peaks, same phases."""
    for name in ("blend_v", "blend_h", "blend_t"):
        blend = getattr(type(vae), name)
        setattr(vae, name, lambda a, b, extent, blend=blend: blend(vae, a, b, min(extent, 1)))


def _text_config(checkpoint: str) -> dict[str, object]:
    from fake_gpu import component_config

    return component_config(checkpoint, "text_encoder")[1]


def predict(job: Job) -> Prediction:
    with FakeGPU() as gpu, torch.inference_mode():
        return _Job(gpu, job).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", action="append", help="ltx2-configs.json keys (default: 2.0, 2.3 dev)"
    )
    parser.add_argument("--precision", action="append", choices=("bf16", "fp8"))
    parser.add_argument("--kind", action="append", choices=("fast", "quality"))
    parser.add_argument("--sizes", default="720p:8,1080p:8")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--card-gib", type=float, default=80.0, help="GPU memory (decides the text encoder)")
    parser.add_argument("--negative", action="store_true", help="jobs with a negative prompt")
    args = parser.parse_args(argv)
    phases = ("text encoder", "stage 1", "stage 2", "decode")
    print(" | ".join(("checkpoint", "recipe", "precision", "job", "weights", *phases, "peak GiB", "text")))
    for checkpoint in args.checkpoint or ["LTX-2-19B-dev", "LTX-2.3-22B-dev"]:
        for precision in args.precision or ["bf16", "fp8"]:
            for kind in args.kind or ["fast", "quality"]:
                for size in args.sizes.split(","):
                    resolution, seconds = size.split(":")
                    for shape in args.shapes.split(","):
                        job = Job(
                            checkpoint,
                            kind,
                            resolution,
                            int(seconds),
                            shape,
                            precision,
                            negative_prompt=args.negative,
                            card_gib=args.card_gib,
                        )
                        p = predict(job)
                        figures = [
                            f"{v / GiB:.1f}" for v in (p.weights, *(p.phases[k] for k in phases), p.peak)
                        ]
                        label = f"{resolution}·{seconds}s {shape}"
                        print(" | ".join([checkpoint, kind, precision, label, *figures, p.text_placement]))


if __name__ == "__main__":
    main()
