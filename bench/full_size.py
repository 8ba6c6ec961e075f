"""LTX-2 at its published full-size architecture with random weights (no download): time per stage
and peak GPU memory of real renders through openreel's engine and recipes, beside a plain diffusers
call of the same recipe.

The configs in ``ltx2-configs.json`` are the published ones (see their ``_sources``); the weights are
PyTorch's random init, so speed and memory are the model's and the pictures are noise. Built on the
GPU in bf16. A dev checkpoint gets a random distilled LoRA of the published rank (384), fused and
restored as on the real checkpoint. ``--reduced`` cuts every stack to one layer (widths stay real) and
renders a small clip, so the same code proves itself on a CPU: its figures say nothing about the model.

``--runs`` is the ordered list of renders, each ``WHAT:RESOLUTION:SECONDS`` with audio, where WHAT is a
recipe (``fast``: the fast ids, ``quality``: veo-3.1), optionally ``+image`` (a first frame) and
``+enhance`` (the prompt rewritten by Gemma first, up to 512 sampled tokens), or ``+extend`` (720p, 7 s
added to an 8 s clip: its last 57 frames and their sound read, pinned, and the two joined), or
``diffusers``: the fast recipe as a user would write it with diffusers' own pipelines (stage 1, the
latent upsampler, stage 2, decode, ``encode_video``), the text encoder on the GPU. The entry ``fp8``
quantizes the transformer blocks for the renders after it (one way: bf16 renders go first). The first
render of a process is cold (CUDA kernels load, the LoRA's dev weights are copied to host memory). The
entry ``compile`` compiles the transformer blocks regionally as ``OPENREEL_COMPILE`` does
(``engine/compiled.py``) for the renders after it; the first render of each new shape after it
pays the compilation. ``recompile`` drops what ``torch.compile`` holds in memory, as a restarted worker
would find it: the render after it compiles again from inductor's caches on disk.

    python bench/full_size.py                                  # GPU: the default run list
    python bench/full_size.py --runs fast:720p:8,diffusers:720p:8,fp8,fast:720p:8
    python bench/full_size.py --runs fast:720p:8,compile,fast:720p:8,fast:720p:8,recompile,fast:720p:8
    python bench/full_size.py --runs fast:720p:8,fast+extend:720p:7
    python bench/full_size.py --reduced                        # CPU smoke run of the default list
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openreel.domain.limits import EXTEND_SECONDS
from openreel.domain.rules import EXTEND_RESOLUTION
from openreel.engine import recipes
from openreel.engine.base import Clip
from openreel.engine.fp8 import native_matmul, quantize_blocks
from openreel.engine.join import lead_of, read_source, write_joined_mp4
from openreel.engine.lora import FusedLora
from openreel.engine.ltx2 import LTX2Engine, guidance_kwargs
from openreel.engine.mux import write_mp4
from openreel.engine.plan import LEAD_FRAMES, RESOLUTIONS, RenderPlan, plan_render
from openreel.engine.recipes import RECIPE_KINDS, Stage
from openreel.engine.text import visiting
from openreel.engine.tiny import build_tokenizer

CONFIGS = Path(__file__).with_name("ltx2-configs.json")
# Most wanted first, so a run cut short still answers the main questions.
DEFAULT_RUNS = (
    "fast:720p:4,fast:720p:8,fast:1080p:8,diffusers:720p:8,fast+image:720p:8,fast+image:1080p:8,"
    "diffusers:1080p:8,fast+extend:720p:7,fast:1080p:4,fp8,fast:720p:8,fast:1080p:8,fast+image:720p:8,"
    "fast+image:1080p:8,fast+extend:720p:7,quality:720p:8"
)
COLUMNS = [
    "run",
    "prec",
    "output",
    "frames",
    "text s",
    "enhance s",
    "lead s",
    "stage1 s",
    "upsample s",
    "stage2 s",
    "vae s",
    "audio s",
    "other s",
    "mux s",
    "total s",
    "peak GiB",
]
STAGE_KEYS = ("text", "enhance", "lead", "stage1", "upsample", "stage2", "vae", "audio", "other", "mux")
LORA_RANK = 384  # ltx-2-19b-distilled-lora-384, ltx-2.3-22b-distilled-lora-384


def _config(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def build_pipeline(checkpoint: str, device: str, dtype: torch.dtype, reduced: bool) -> tuple[Any, Any]:
    """The pipeline and its latent upsampler pipeline, every weight random."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplePipeline, LTX2TextConnectors
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    cfg = json.loads(CONFIGS.read_text())[checkpoint]
    transformer, connectors = _config(cfg["transformer"]), _config(cfg["connectors"])
    text = {k: v for k, v in cfg["text_encoder"].items() if k != "_class_name"}
    upsampler_config = _config(cfg["latent_upsampler"])
    if reduced:
        upsampler_config["num_blocks_per_stage"] = 1
        for part in (transformer, connectors):
            part.update({k: 1 for k in part if k.endswith("num_layers")})
        text["text_config"] = {**text["text_config"], "num_hidden_layers": 1}
        text["vision_config"] = {**text["vision_config"], "num_hidden_layers": 1}
        # The connectors read every hidden state of the text encoder (layers + embeddings).
        connectors["text_proj_in_factor"] = 2
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            parts = {
                "transformer": LTX2VideoTransformer3DModel.from_config(transformer),
                "connectors": LTX2TextConnectors.from_config(connectors),
                "vae": AutoencoderKLLTX2Video.from_config(_config(cfg["vae"])),
                "audio_vae": AutoencoderKLLTX2Audio.from_config(_config(cfg["audio_vae"])),
                "vocoder": LTX2Vocoder.from_config(_config(cfg["vocoder"])),
                "text_encoder": Gemma3ForConditionalGeneration(Gemma3Config.from_dict(text)),
            }
        # Built on the host: its blur kernel is an integer matrix product, which CUDA does not do.
        upsampler = LTX2LatentUpsamplerModel.from_config(upsampler_config).to(device)
    finally:
        torch.set_default_dtype(default)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(_config(cfg["scheduler"]))
    # A byte-level Gemma tokenizer made in code: real prompt-dependent ids, padded to the same
    # 1024-token length as the real one, without downloading the real vocabulary.
    pipe = LTX2Pipeline(scheduler=scheduler, tokenizer=build_tokenizer(), **parts)
    return pipe, LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)


class Stages:
    """Wall time per stage, the GPU synchronised at every edge so asynchronous kernels are counted. A stage
    inside another (the text encoder inside a diffusers call) is taken out of the outer one's time."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: list[list[Any]] = []  # [name, start, seconds of the stages inside]

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def begin(self, name: str) -> None:
        self._sync()
        self._open.append([name, time.perf_counter(), 0.0])

    def end(self) -> None:
        self._sync()
        name, start, inner = self._open.pop()
        elapsed = time.perf_counter() - start
        self.seconds[name] += elapsed - inner
        if self._open:
            self._open[-1][2] += elapsed

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        finally:
            self.end()

    @contextmanager
    def wrapped(self, owner: Any, method: str, name: str) -> Iterator[None]:
        """``owner.method`` timed as ``name`` inside the block; ``{n}`` in the name numbers the calls."""
        assert method not in vars(owner), f"{method} is not a method of {type(owner).__name__}"
        original: Callable[..., Any] = getattr(owner, method)
        calls = [0]

        def timed(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            with self.stage(name.format(n=calls[0])):
                return original(*args, **kwargs)

        # An instance attribute over the class's method; deleting it brings the method back.
        object.__setattr__(owner, method, timed)
        try:
            yield
        finally:
            object.__delattr__(owner, method)

    def module(self, module: torch.nn.Module, name: str) -> None:
        module.register_forward_pre_hook(lambda *_: self.begin(name))
        module.register_forward_hook(lambda *_: self.end())


def random_lora(transformer: torch.nn.Module, rank: int, path: Path) -> Path:
    """A distilled LoRA of the published rank over every linear of the transformer blocks (diffusers key
    names), small enough in values not to blow the random model up."""
    from safetensors.torch import save_file

    weights = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("transformer_blocks."):
            r = min(rank, module.in_features, module.out_features)
            weights[f"transformer.{name}.lora_A.weight"] = torch.randn(
                r, module.in_features, dtype=torch.bfloat16
            )
            weights[f"transformer.{name}.lora_B.weight"] = torch.zeros(
                module.out_features, r, dtype=torch.bfloat16
            )
    save_file(weights, str(path))
    return path


@dataclass(frozen=True)
class Run:
    what: str  # "fast", "quality" or "diffusers"
    image: bool
    resolution: str
    duration: int
    enhance: bool = False  # the prompt rewritten by Gemma first (engine/enhance.py)
    extend: bool = False  # 7 s added to a clip (engine/join.py, engine/lead.py)

    @property
    def label(self) -> str:
        extras = ("+image", self.image), ("+extend", self.extend), ("+enhance", self.enhance)
        return self.what + "".join(name for name, on in extras if on)


SWITCHES = ("fp8", "compile", "recompile")


def parse_runs(text: str) -> list[Run | str]:
    """The ``--runs`` list: ``Run``s, and the ``SWITCHES`` where the transformer changes for good."""
    runs: list[Run | str] = []
    for entry in text.split(","):
        if entry in SWITCHES:
            runs.append(entry)
            continue
        what, resolution, duration = entry.split(":") if entry.count(":") == 2 else ("", "", "")
        kind, *extras = what.split("+")
        extend = "extend" in extras
        if (
            kind not in (*RECIPE_KINDS, "diffusers")
            or extras
            not in ([], ["image"], ["enhance"], ["image", "enhance"], ["extend"], ["extend", "enhance"])
            or (extras and kind == "diffusers")
            or resolution not in RESOLUTIONS
            or not duration.isdigit()
            or (extend and (resolution, int(duration)) != (EXTEND_RESOLUTION, EXTEND_SECONDS))
        ):
            raise SystemExit(
                f"--runs: {entry!r} is not RECIPE[+image][+enhance]:RES:SECONDS, "
                "RECIPE+extend[+enhance]:720p:7 or diffusers:RES:SECONDS"
            )
        runs.append(Run(kind, "image" in extras, resolution, int(duration), "enhance" in extras, extend))
    for switch in SWITCHES:
        after = runs[runs.index(switch) + 1 :] if switch in runs else []
        if switch in after or any(isinstance(r, Run) and r.what == "diffusers" for r in after):
            raise SystemExit(f"--runs: {switch} once, and the diffusers baseline before it (plain bf16)")
    if "recompile" in runs and "compile" not in runs[: runs.index("recompile")]:
        raise SystemExit("--runs: recompile after compile")
    return runs


def plan_for(run: Run, reduced: bool, index: int) -> RenderPlan:
    return plan_render(
        prompt=f"a red fox running through fresh snow at dawn, cinematic, take {index}",
        negative_prompt=None,
        seed=1,
        duration_s=1 if reduced else run.duration,
        resolution=run.resolution,
        aspect_ratio="16:9",
        generate_audio=True,
        recipe="fast" if run.what == "diffusers" else run.what,  # type: ignore[arg-type]
        has_first_frame=run.image,
        has_last_frame=False,
        enhance_prompt=run.enhance,
        lead_frames=LEAD_FRAMES if run.extend else 0,
        grid_scale=0.125 if reduced else 1.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="LTX-2-19B-dev", help="a key of ltx2-configs.json")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="ordered renders (see above)")
    parser.add_argument("--reduced", action="store_true", help="one layer per stack, small clip (CPU)")
    parser.add_argument("--json", type=Path, help="append each row here as a JSON line")
    args = parser.parse_args()
    runs = parse_runs(args.runs)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    started = time.perf_counter()
    pipe, upsampler = build_pipeline(args.checkpoint, device, dtype, args.reduced)
    params = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in pipe.components.items()
        if hasattr(m, "parameters")
    }
    print(f"{args.checkpoint}{' (reduced: one layer per stack)' if args.reduced else ''} on {device} {dtype}")
    print(f"host: {platform.node()} {platform.machine()}, torch {torch.__version__}")
    if device == "cuda":
        print(f"gpu: {torch.cuda.get_device_name()}")
    print(
        f"built in {time.perf_counter() - started:.1f} s; parameters (B): "
        + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in params.items()),
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        dev = bool(pipe.scheduler.config.get("use_dynamic_shifting"))
        lora_file = random_lora(pipe.transformer, LORA_RANK, Path(tmp) / "lora.safetensors") if dev else None
        # As from_pretrained places them: the text encoder waits in host memory on a GPU.
        if device == "cuda":
            pipe.text_encoder.to("cpu")
        engine = LTX2Engine(
            pipe,
            name="bench",
            grid_scale=1.0,
            random_weights=True,
            device=device,
            offload_text_encoder=device == "cuda",
            lora=FusedLora.load(pipe, lora_file) if lora_file else None,
            upsampler=upsampler,
        )
        print(f"LTX-{engine.version} {engine.weights} weights", flush=True)
        Bench(engine, pipe, upsampler, device, args).run_all(runs, lora_file)


class Bench:
    """The renders of one process, all on the one engine (and, for the baseline, its own pipeline)."""

    def __init__(
        self, engine: LTX2Engine, pipe: Any, upsampler: Any, device: str, args: argparse.Namespace
    ) -> None:
        self.engine, self.pipe, self.upsampler, self.device, self.args = engine, pipe, upsampler, device, args
        self.cuda = device.startswith("cuda")
        self.clip: bytes | None = None  # what the extension runs continue
        self.stages = Stages(device)
        self.stages.module(upsampler.latent_upsampler, "upsample")
        pipe.set_progress_bar_config(disable=True)

    def run_all(self, runs: list[Run | str], lora_file: Path | None) -> None:
        print(" ".join(f"{c:>10}" for c in COLUMNS), flush=True)
        for index, run in enumerate(runs):
            if run == "fp8":
                self.to_fp8(lora_file)
                continue
            if run == "compile":
                self.engine.compile()
                print("compile: the transformer blocks compile at their first call", flush=True)
                continue
            if run == "recompile":
                torch._dynamo.reset()
                print(
                    "recompile: dynamo's code dropped as in a new process, inductor's disk cache kept",
                    flush=True,
                )
                continue
            assert isinstance(run, Run)
            baseline = run.what == "diffusers"
            error = self.engine.unavailable("fast" if baseline else run.what)  # type: ignore[arg-type]
            if error:
                print(f"{run.label}: {error}", flush=True)
                continue
            # A new prompt each render: the engine's prompt cache would otherwise skip the text encoder.
            plan = plan_for(run, self.args.reduced, index)
            self.stages.seconds.clear()
            try:
                with self.diffusers_placed() if baseline else self.openreel_timed():
                    if self.cuda:
                        torch.cuda.reset_peak_memory_stats()
                    begin = time.perf_counter()
                    (self.diffusers if baseline else self.openreel)(plan)
                    total = time.perf_counter() - begin
                    peak = int(torch.cuda.max_memory_allocated()) if self.cuda else None
            except Exception as exc:  # one failed render (out of memory, say) must not lose the others
                print(f"{run.label}:{run.resolution}:{run.duration} failed: {type(exc).__name__}: {exc}")
                if self.cuda:
                    torch.cuda.empty_cache()
                continue
            self.row(run, plan, total, peak)

    @contextmanager
    def openreel_timed(self) -> Iterator[None]:
        engine = self.engine
        with (
            self.stages.wrapped(engine, "_sample", "stage{n}"),
            self.stages.wrapped(engine.prompts, "_encode", "text"),
            self.stages.wrapped(engine.enhancer, "rewrite", "enhance"),
            self.stages.wrapped(engine, "_decode_video", "vae"),
            self.stages.wrapped(engine, "_decode_audio", "audio"),
        ):
            yield

    def openreel(self, plan: RenderPlan) -> None:
        import PIL.Image

        image = (
            PIL.Image.new("RGB", (plan.width, plan.height), (200, 120, 40)) if plan.has_first_frame else None
        )
        source, lead = None, None
        if plan.lead_frames:
            with self.stages.stage("lead"):  # as a worker reads it, once per task
                source = read_source(self.source(plan))
                lead = lead_of(source, plan.lead_frames, plan.fps)
        clip = self.engine.render(plan, image, None, lambda *_: None, lead=lead)
        with tempfile.TemporaryDirectory() as tmp, self.stages.stage("mux"):
            out = Path(tmp) / "clip.mp4"
            if source is None:
                write_mp4(clip, plan.fps, out, preset="ultrafast")
            else:
                write_joined_mp4(
                    source, clip, lead_frames=plan.lead_frames, fps=plan.fps, path=out, preset="ultrafast"
                )

    def source(self, plan: RenderPlan) -> bytes:
        """An 8 s clip of the plan's size with sound, the one every extension run continues (made once)."""
        if self.clip is None:
            frames = np.broadcast_to(
                np.linspace(0, 255, 8 * plan.fps, dtype=np.uint8)[:, None, None, None],
                (8 * plan.fps, plan.height, plan.width, 3),
            )
            rate = 48_000
            tone = 0.2 * np.sin(np.arange(8 * rate) * 2 * np.pi * 220 / rate).astype(np.float32)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "source.mp4"
                write_mp4(
                    Clip(np.ascontiguousarray(frames), np.stack([tone, tone]), rate),
                    plan.fps,
                    path,
                    preset="ultrafast",
                )
                self.clip = path.read_bytes()
        return self.clip

    @contextmanager
    def diffusers_placed(self) -> Iterator[None]:
        """As diffusers' documentation sets a pipeline up, outside the timed call: every component on the
        GPU (the text encoder too), tiled VAE decoding; the same weights, the distilled LoRA fused."""
        pipe = self.pipe
        self.engine._use("distilled")
        pipe.vae.enable_tiling()
        try:
            with (
                # Back onto its own (pinned) host tensors afterwards: .to("cpu") would leave pageable
                # copies, and every later prompt's visit to the GPU slower.
                visiting(pipe.text_encoder, torch.device(self.device)),
                self.stages.wrapped(pipe, "encode_prompt", "text"),
                self.stages.wrapped(pipe.vae, "decode", "vae"),
                self.stages.wrapped(pipe.audio_vae, "decode", "audio"),
                self.stages.wrapped(pipe.vocoder, "forward", "audio"),
            ):
                yield
        finally:
            pipe.vae.disable_tiling()

    def diffusers(self, plan: RenderPlan) -> None:
        """The fast recipe through diffusers' own pipelines and ``encode_video``."""
        from diffusers.utils.export_utils import encode_video

        stage1, stage2 = recipes.recipe("fast", self.engine.version).stages
        generator = torch.Generator(self.device).manual_seed(plan.seed)

        def sample(stage: Stage, name: str, **extra: Any) -> Any:
            width, height = plan.stage_size(stage.half)
            with self.stages.stage(name):
                return self.pipe(
                    prompt=plan.prompt,
                    width=width,
                    height=height,
                    num_frames=plan.gen_frames,
                    frame_rate=float(plan.fps),
                    sigmas=list(stage.sigmas),
                    generator=generator,
                    return_dict=False,
                    **guidance_kwargs(stage),
                    **extra,
                )

        with torch.inference_mode():
            video, audio = sample(stage1, "stage1", output_type="latent")
            video = self.upsampler(latents=video, output_type="latent", return_dict=False)[0]
            frames, wave = sample(
                stage2,
                "stage2",
                noise_scale=stage2.noise_scale,
                latents=video,
                audio_latents=audio,
                output_type="np",
            )
        with tempfile.TemporaryDirectory() as tmp, self.stages.stage("mux"):
            encode_video(
                # Random weights can decode to NaN at 1080p, which encode_video refuses; real ones do not.
                np.nan_to_num(frames[0]),
                fps=plan.fps,
                output_path=str(Path(tmp) / "clip.mp4"),
                audio=wave[0].float().cpu(),
                audio_sample_rate=self.engine.sample_rate,
            )

    def to_fp8(self, lora_file: Path | None) -> None:
        """float8 blocks from here on. The LoRA is taken out first and read again: its saved dev weights
        are bf16 tensors of layers that no longer exist."""
        engine = self.engine
        if engine.lora is not None:
            engine.lora.restore()
        swapped = quantize_blocks(self.pipe.transformer, native_matmul(torch.device(self.device)))
        if lora_file is not None:
            engine.lora = FusedLora.load(self.pipe, lora_file)
        engine.precision = "fp8"
        if self.cuda:
            torch.cuda.empty_cache()
        print(f"fp8: {swapped} linears of the transformer blocks in float8", flush=True)

    def row(self, run: Run, plan: RenderPlan, total: float, peak: int | None) -> None:
        t = self.stages.seconds
        # The rest: LoRA fused or restored, conditions encoded, frames to uint8 and the host, audio trimmed.
        t["other"] = total - sum(t.values())
        precision = self.engine.precision + ("+compile" if self.engine.compiled else "")
        cells = [run.label, precision, f"{plan.width}x{plan.height}", str(plan.gen_frames)]
        cells += [f"{t[k]:.2f}" if k in t else "-" for k in STAGE_KEYS]
        cells += [f"{total:.2f}", f"{peak / 2**30:.1f}" if peak else "-"]
        print(" ".join(f"{c:>10}" for c in cells), flush=True)
        if self.args.json:
            record = {
                "run": run.label,
                "precision": self.engine.precision,
                "compiled": self.engine.compiled,
                "resolution": run.resolution,
                "seconds": run.duration,
                "width": plan.width,
                "height": plan.height,
                "frames": plan.gen_frames,
                "stages": {k: round(t[k], 3) for k in STAGE_KEYS if k in t},
                "total": round(total, 3),
                "peakGiB": round(peak / 2**30, 2) if peak else None,
                "reduced": self.args.reduced,
            }
            with self.args.json.open("a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
