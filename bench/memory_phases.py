"""Predicted peak GPU memory of each phase of an LTX-2 render at full size, on a machine without a GPU.

Every component is built at its published size (bench/ltx2-configs.json) with fake weights inside
:class:`fake_gpu.FakeGPU` and run on fake inputs of the real shapes, so the numbers are the model's
own allocation pattern; nothing is allocated and nothing is computed. See fake_gpu.py for what the
prediction covers (allocated bytes, i.e. ``torch.cuda.max_memory_allocated``) and what it does not
(CUDA context, cuBLAS/cuDNN workspaces, allocator fragmentation).

Per phase it prints the weights of the component(s) the phase runs and the activation peak above
them (inputs, temporaries and outputs of that call). A phase needs at least weights + peak; with
other components kept resident add theirs (the "all resident" column adds every component).

    python bench/memory_phases.py --checkpoint LTX-2-19B-dev
    python bench/memory_phases.py --checkpoint LTX-2.3-22B-dev --sizes 1080p --batches 1
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_gpu import FakeGPU, GiB, build_component, component_bytes, gib

from openreel.engine.ltx2 import VAE_TILING

# openreel's plan (src/openreel/engine/plan.py): sides rounded up to 64, 8k+1 frames, stage 1 at half.
SIZES: dict[str, tuple[int, int]] = {"720p": (1280, 768), "1080p": (1920, 1088)}
TEXT_TOKENS = 1024  # LTX2Pipeline's max_sequence_length (tokenizer pads to it)
COMPONENTS = ("text_encoder", "connectors", "transformer", "vae", "latent_upsampler", "audio_vae", "vocoder")


@dataclass
class Render:
    """Shapes of one render: ``width`` x ``height`` is the stage-2 (full) grid."""

    name: str
    width: int
    height: int
    seconds: float
    fps: float = 24.0

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps) + 1

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 8 + 1

    def grid(self, stage: int) -> tuple[int, int]:
        """Latent (height, width) of stage 1 (half size) or stage 2."""
        scale = 2 if stage == 1 else 1
        return self.height // 32 // scale, self.width // 32 // scale

    def pixels(self, stage: int) -> tuple[int, int]:
        scale = 2 if stage == 1 else 1
        return self.height // scale, self.width // scale

    def video_tokens(self, stage: int) -> int:
        h, w = self.grid(stage)
        return self.latent_frames * h * w

    @property
    def audio_tokens(self) -> int:
        # LTX2Pipeline: round(num_frames / frame_rate * sampling_rate / hop_length / 4)
        return round(self.frames / self.fps * 16000 / 160 / 4)


@dataclass
class Row:
    phase: str
    component: str
    weights: int
    peak: int  # above the live bytes at the phase's start (which are the weights)
    retained: int  # still live at the end (outputs), above the start
    seconds: float
    largest: int  # elements of the largest tensor the phase allocates


@dataclass
class Report:
    checkpoint: str
    assumptions: list[str] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    build_seconds: dict[str, float] = field(default_factory=dict)


class Runner:
    def __init__(self, gpu: FakeGPU, report: Report, checkpoint: str) -> None:
        self.gpu, self.report, self.checkpoint = gpu, report, checkpoint
        self.dev = gpu.device

    def build(self, name: str) -> torch.nn.Module:
        """Build one component; its weights count from here until the phase method using it returns."""
        start = time.perf_counter()
        module = build_component(self.checkpoint, name)
        self.report.build_seconds[name] = time.perf_counter() - start
        self.report.weights[name] = component_bytes(module)
        self.report.params[name] = sum(p.numel() for p in module.parameters())
        return module

    def measure(self, phase: str, component: str, run: Callable[[], Any]) -> Row:
        gc.collect()
        weights = self.gpu.live
        start = time.perf_counter()
        with self.gpu.phase(phase) as record:
            result = run()
        seconds = time.perf_counter() - start
        del result
        gc.collect()
        row = Row(
            phase, component, weights, record.above_start, record.end - record.start, seconds, record.largest
        )
        self.report.rows.append(row)
        print(f"  {phase}: peak +{row.peak / GiB:.1f} GiB ({seconds:.1f} s)", file=sys.stderr, flush=True)
        return row

    def empty(self, *shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return torch.empty(*shape, dtype=dtype, device=self.dev)

    # --- phases ---------------------------------------------------------------------------------

    # Each phase method builds its component(s) as locals: they are freed when it returns.

    def text_encoder(self, batches: list[int]) -> None:
        encoder = self.build("text_encoder")

        def encode(batch: int) -> torch.Tensor:
            # LTX2Pipeline._get_gemma_prompt_embeds: every hidden state (embeddings + 48 layers) stacked
            # on a new last axis and packed to (B, 1024, 3840 * 49), while the output (with its
            # (B, 1024, 262208) logits) is still referenced.
            ids = self.empty(batch, TEXT_TOKENS, dtype=torch.long)
            mask = self.empty(batch, TEXT_TOKENS, dtype=torch.long)
            outputs = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            stacked = torch.stack(outputs.hidden_states, dim=-1)
            return stacked.flatten(2, 3)

        for batch in batches:
            self.measure(
                f"text encoder, {TEXT_TOKENS} tokens, B={batch}", "text_encoder", lambda b=batch: encode(b)
            )

    def connectors(self, batches: list[int]) -> None:
        connectors = self.build("connectors")
        width = connectors.config.caption_channels * connectors.config.text_proj_in_factor
        for batch in batches:
            self.measure(
                f"connectors, B={batch}",
                "connectors",
                lambda b=batch: connectors(
                    self.empty(b, TEXT_TOKENS, width), self.empty(b, TEXT_TOKENS, dtype=torch.long)
                ),
            )

    def transformer(self, renders: list[Render], batches: list[int], conditioned: bool) -> None:
        model = self.build("transformer")
        cfg = model.config
        if cfg.use_prompt_embeddings:  # LTX-2.0: the transformer projects the 3840-wide connector output
            video_ctx = audio_ctx = cfg.caption_channels
        else:
            video_ctx, audio_ctx = cfg.cross_attention_dim, cfg.audio_cross_attention_dim
        # openreel's recipes (CROSS_TIMESTEP): cross-modal modulation by the other modality's sigma for
        # 2.3/2.5, off for 2.0. It matters with per-token timesteps: off, the a2v modulation is per token.
        cross_timestep = not self.checkpoint.startswith("LTX-2-19B")

        def step(render: Render, stage: int, batch: int, per_token: bool) -> Any:
            h, w = render.grid(stage)
            tokens, audio = render.video_tokens(stage), render.audio_tokens
            # LTX2ImageToVideoPipeline / LTX2ConditionPipeline pass one timestep per video token.
            timestep = self.empty(batch, tokens, dtype=torch.float32) if per_token else None
            sigma = self.empty(batch, dtype=torch.float32)
            return model(
                hidden_states=self.empty(batch, tokens, cfg.in_channels),
                audio_hidden_states=self.empty(batch, audio, cfg.audio_in_channels),
                encoder_hidden_states=self.empty(batch, TEXT_TOKENS, video_ctx),
                audio_encoder_hidden_states=self.empty(batch, TEXT_TOKENS, audio_ctx),
                timestep=timestep if per_token else sigma,
                audio_timestep=sigma,
                sigma=sigma,
                encoder_attention_mask=self.empty(batch, TEXT_TOKENS, dtype=torch.long),
                audio_encoder_attention_mask=self.empty(batch, TEXT_TOKENS, dtype=torch.long),
                num_frames=render.latent_frames,
                height=h,
                width=w,
                fps=render.fps,
                audio_num_frames=audio,
                use_cross_timestep=cross_timestep,
                return_dict=False,
            )

        for render in renders:
            for stage in (1, 2):
                ph, pw = render.pixels(stage)
                for batch in batches:
                    self.measure(
                        f"transformer {render.name} stage {stage} ({pw}x{ph}, "
                        f"{render.video_tokens(stage):,}+{render.audio_tokens} tok), B={batch}",
                        "transformer",
                        lambda r=render, s=stage, b=batch: step(r, s, b, False),
                    )
            if conditioned:
                ph, pw = render.pixels(2)
                self.measure(
                    f"transformer {render.name} stage 2 ({pw}x{ph}), per-token timestep (I2V), B=1",
                    "transformer",
                    lambda r=render: step(r, 2, 1, True),
                )

    def vae(self, renders: list[Render], untiled: bool) -> None:
        vae = self.build("vae")
        for render in renders:
            for stage in (1, 2):
                ph, pw = render.pixels(stage)
                self.measure(
                    f"VAE encode 1 image {pw}x{ph}",
                    "vae",
                    lambda ph=ph, pw=pw: vae.encode(self.empty(1, 3, 1, ph, pw)).latent_dist.mode(),
                )
        for render in renders:
            h, w = render.grid(2)
            latent = (1, vae.config.latent_channels, render.latent_frames, h, w)
            label = f"{render.width}x{render.height}x{render.frames}"
            if untiled:
                vae.use_tiling, vae.use_framewise_decoding = False, False
                self.measure(
                    f"VAE decode {render.name} ({label}), untiled",
                    "vae",
                    lambda latent=latent: vae.decode(self.empty(*latent), return_dict=False)[0],
                )
            # Lightricks' reference tiling, as the engine decodes.
            vae.enable_tiling(**VAE_TILING)
            vae.use_framewise_decoding = True
            self.measure(
                f"VAE decode {render.name} ({label}), tiled 512/448 x 64/40",
                "vae",
                lambda latent=latent: vae.decode(self.empty(*latent), return_dict=False)[0],
            )

    def upsampler(self, renders: list[Render]) -> None:
        upsampler = self.build("latent_upsampler")
        for render in renders:
            h, w = render.grid(1)
            self.measure(
                f"latent upsampler {render.name} (stage-1 latent {render.latent_frames}x{h}x{w})",
                "latent_upsampler",
                lambda h=h, w=w, r=render: upsampler(self.empty(1, 128, r.latent_frames, h, w)),
            )

    def audio(self, renders: list[Render]) -> None:
        audio_vae, vocoder = self.build("audio_vae"), self.build("vocoder")
        for seconds in sorted({r.seconds for r in renders}):
            render = Render("", 0, 0, seconds)
            bins = audio_vae.config.mel_bins // 4
            latent = (1, audio_vae.config.latent_channels, render.audio_tokens, bins)

            def decode(latent: tuple[int, ...] = latent) -> torch.Tensor:
                mel = audio_vae.decode(self.empty(*latent), return_dict=False)[0]
                return vocoder(mel)

            self.measure(f"audio VAE decode + vocoder, {seconds:g} s", "audio_vae+vocoder", decode)


def predict(
    checkpoint: str,
    renders: list[Render],
    batches: list[int],
    *,
    untiled: bool = True,
    conditioned: bool = True,
    parts: tuple[str, ...] = ("text", "transformer", "vae", "upsampler", "audio"),
) -> Report:
    """Run every requested phase at full size under one FakeGPU and return the numbers."""
    report = Report(checkpoint)
    for r in renders:
        report.assumptions.append(
            f"{r.name}: {r.width}x{r.height} (stage 1 {r.width // 2}x{r.height // 2}), {r.seconds:g} s at "
            f"{r.fps:g} fps = {r.frames} frames ({r.latent_frames} latent), {r.audio_tokens} audio tokens"
        )
    report.assumptions += [
        f"text: {TEXT_TOKENS} tokens (the pipeline pads to it); B=2 is a CFG step (dev checkpoints; their",
        "  STG and modality-isolation calls are B=1); connectors and transformer get B prompts",
        "transformer: T2V passes one timestep per sample; I2V/keyframe pipelines one per video token",
        "  (LTX2ImageToVideoPipeline, LTX2ConditionPipeline); use_cross_timestep off for 2.0, on after",
        "VAE: tiled = Lightricks' reference (512 px tiles, stride 448; 64-frame tiles, stride 40, framewise)",
    ]
    with FakeGPU() as gpu, torch.inference_mode():
        runner = Runner(gpu, report, checkpoint)
        steps: dict[str, list[Callable[[], None]]] = {
            "text": [lambda: runner.text_encoder(batches), lambda: runner.connectors(batches)],
            "transformer": [lambda: runner.transformer(renders, batches, conditioned)],
            "vae": [lambda: runner.vae(renders, untiled)],
            "upsampler": [lambda: runner.upsampler(renders)],
            "audio": [lambda: runner.audio(renders)],
        }
        for part in parts:
            for step in steps[part]:
                step()
                gc.collect()
                if gpu.live > 2**20:  # everything of the phase should be gone with its locals
                    raise RuntimeError(f"{gpu.live} bytes still live after {part}")
    return report


def render_table(report: Report) -> str:
    lines = [f"LTX-2 predicted GPU memory: {report.checkpoint} (bf16, GiB = 2^30 bytes)", ""]
    lines += [
        "Method: every component built at full size with fake weights (torch FakeTensorMode, no memory,",
        "no compute) and run on fake inputs of the real shapes under torch.inference_mode(); each storage",
        "is counted from the op that creates it until its last tensor dies. Attention is costed as the",
        "fused CUDA kernels allocate (FlashAttention-2 without a mask, memory-efficient with one: output",
        "+ log-sum-exp), never as a T x T score matrix. Figures are allocated bytes",
        "(torch.cuda.max_memory_allocated); NOT included: CUDA context (~0.5-1 GiB), cuBLAS/cuDNN",
        "workspaces (conv3d in the VAE can ask for GiBs), caching-allocator fragmentation (reserved >",
        "allocated), and tensors the pipeline keeps between calls (latents, prompt embeddings).",
        "Assumes:",
        *(f"  {line}" for line in report.assumptions),
        "",
        f"{'component':<18}{'params':>10}{'weights GiB':>13}{'build s':>9}",
    ]
    total = 0
    for name in COMPONENTS:
        if name in report.weights:
            weights = report.weights[name]
            total += weights
            lines.append(
                f"{name:<18}{report.params[name] / 1e9:>9.3f}B{gib(weights):>13}"
                f"{report.build_seconds[name]:>9.1f}"
            )
    lines.append(f"{'all resident':<18}{'':>10}{gib(total):>13}")
    lines += [
        "",
        "weights = the phase's own component(s); act. peak = most bytes above them during the call",
        "(inputs, temporaries, outputs); own = weights + act. peak; all = every component above + act. peak.",
        f"{'phase':<76}{'weights':>8}{'act.peak':>9}{'own':>7}{'all':>7}{'time s':>8}",
    ]
    huge = False
    for row in report.rows:
        own = row.weights + row.peak
        mark = "*" if row.largest >= 2**31 else ""
        huge = huge or bool(mark)
        lines.append(
            f"{row.phase + mark:<76}{gib(row.weights):>8}{gib(row.peak):>9}{gib(own):>7}"
            f"{gib(total + row.peak):>7}{row.seconds:>8.1f}"
        )
    if huge:
        lines += [
            "* allocates a tensor of >= 2^31 elements: past the 32-bit indexing of many CUDA kernels",
            "  (cuDNN convolutions among them); a real run may fail or take a slower path there.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="LTX-2-19B-dev")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["text", "transformer", "vae", "upsampler", "audio"],
        choices=["text", "transformer", "vae", "upsampler", "audio"],
    )
    parser.add_argument("--no-untiled", action="store_true", help="skip the untiled VAE decode")
    parser.add_argument("--no-conditioned", action="store_true", help="skip the per-token-timestep step")
    parser.add_argument("--json", type=Path, help="also write the numbers (bytes) here")
    args = parser.parse_args(argv)

    renders = [Render(name, *SIZES[name], args.seconds) for name in args.sizes]
    start = time.perf_counter()
    report = predict(
        args.checkpoint,
        renders,
        args.batches,
        untiled=not args.no_untiled,
        conditioned=not args.no_conditioned,
        parts=tuple(args.parts),
    )
    print(render_table(report))
    print(f"\n({time.perf_counter() - start:.0f} s on this CPU, torch {torch.__version__})")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))


if __name__ == "__main__":
    main()
