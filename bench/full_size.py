"""LTX-2 at its published full-size architecture with random weights (no download): time per stage
and peak GPU memory of a real render through openreel's engine and recipes, 720p and 1080p at 4 and 8 s.

The configs in ``ltx2-configs.json`` are the published ones (see their ``_sources``); the weights are
PyTorch's random init, so speed and memory are the model's and the pictures are noise. Built on the
GPU in bf16. A dev checkpoint gets a random distilled LoRA of the published rank (384), fused and
restored as on the real checkpoint. ``--reduced`` cuts every stack to one layer (widths stay real) and
renders a small clip, so the same code proves itself on a CPU: its figures say nothing about the model.

    python bench/full_size.py                                  # GPU: LTX-2-19B-dev, the fast recipe
    python bench/full_size.py --model veo-3.1 --sizes 720p:8   # the quality recipe
    python bench/full_size.py --image --precision fp8          # with a first frame, float8 blocks
    python bench/full_size.py --reduced                        # CPU smoke run
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
from pathlib import Path
from typing import Any

import torch

from openreel.catalog import load_catalog
from openreel.engine.fp8 import native_matmul, quantize_blocks
from openreel.engine.lora import FusedLora
from openreel.engine.ltx2 import LTX2Engine
from openreel.engine.mux import write_mp4
from openreel.engine.plan import RenderPlan, plan_render
from openreel.engine.recipes import RecipeKind
from openreel.engine.tiny import build_tokenizer

CONFIGS = Path(__file__).with_name("ltx2-configs.json")
SIZES = [("720p", 4), ("720p", 8), ("1080p", 4), ("1080p", 8)]
COLUMNS = [
    "output",
    "frames",
    "text s",
    "stage1 s",
    "upsample s",
    "stage2 s",
    "vae s",
    "audio s",
    "frames s",
    "mux s",
    "total s",
    "peak GiB",
]
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
            upsampler = LTX2LatentUpsamplerModel.from_config(upsampler_config)
    finally:
        torch.set_default_dtype(default)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(_config(cfg["scheduler"]))
    # A byte-level Gemma tokenizer made in code: real prompt-dependent ids, padded to the same
    # 1024-token length as the real one, without downloading the real vocabulary.
    pipe = LTX2Pipeline(scheduler=scheduler, tokenizer=build_tokenizer(), **parts)
    return pipe, LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)


class Stages:
    """Wall time per stage, the GPU synchronised at every edge so asynchronous kernels are counted."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)

    def module(self, module: torch.nn.Module, name: str) -> None:
        starts: list[float] = []

        def begin(*_: Any) -> None:
            self._sync()
            starts.append(time.perf_counter())

        def done(*_: Any) -> None:
            self._sync()
            self.seconds[name] += time.perf_counter() - starts.pop()

        module.register_forward_pre_hook(begin)
        module.register_forward_hook(done)


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


def plan_for(resolution: str, duration: int, recipe: RecipeKind, image: bool, reduced: bool) -> RenderPlan:
    return plan_render(
        prompt="a red fox running through fresh snow at dawn, cinematic",
        negative_prompt=None,
        seed=1,
        duration_s=1 if reduced else duration,
        resolution=resolution,
        aspect_ratio="16:9",
        generate_audio=True,
        recipe=recipe,
        has_first_frame=image,
        has_last_frame=False,
        grid_scale=0.125 if reduced else 1.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="LTX-2-19B-dev", help="a key of ltx2-configs.json")
    parser.add_argument("--model", default="veo-3.1-fast", help="the public model id whose recipe to run")
    parser.add_argument("--image", action="store_true", help="condition on a first frame")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp8"))
    parser.add_argument("--reduced", action="store_true", help="one layer per stack, small clip (CPU)")
    parser.add_argument("--sizes", default=",".join(f"{r}:{d}" for r, d in SIZES), help="e.g. 720p:4,1080p:8")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    started = time.perf_counter()
    pipe, upsampler = build_pipeline(args.checkpoint, device, dtype, args.reduced)
    recipe = load_catalog().models[args.model].recipe
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
        + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in params.items())
    )
    with tempfile.TemporaryDirectory() as tmp:
        dev = bool(pipe.scheduler.config.get("use_dynamic_shifting"))
        lora_file = Path(tmp) / "lora.safetensors"
        lora = FusedLora.load(pipe, random_lora(pipe.transformer, LORA_RANK, lora_file)) if dev else None
        if args.precision == "fp8":
            quantize_blocks(pipe.transformer, native_matmul(torch.device(device)))
        # As from_pretrained places them: the text encoder waits in host memory on a GPU.
        if device == "cuda":
            pipe.text_encoder.to("cpu")
        engine = LTX2Engine(
            pipe,
            name="bench",
            grid_scale=1.0,
            random_weights=True,
            device=device,
            precision=args.precision,
            offload_text_encoder=device == "cuda",
            lora=lora,
            upsampler=upsampler,
        )
        weights = f"LTX-{engine.version} {engine.weights} weights, {args.precision}"
        print(f"{args.model}: the {recipe} recipe on {weights}")
        unavailable = engine.unavailable(recipe)
        if unavailable:
            raise SystemExit(unavailable)
        _run(engine, upsampler, args, recipe, device)


def _run(
    engine: LTX2Engine, upsampler: Any, args: argparse.Namespace, recipe: RecipeKind, device: str
) -> None:
    import PIL.Image

    stages = Stages(device)
    stages.wrap(engine.prompts, "_encode", "text")
    calls = [0]
    sample = engine._sample

    def per_stage(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        with stages.stage(f"stage{calls[0]}"):
            return sample(*args, **kwargs)

    engine._sample = per_stage  # type: ignore[method-assign]
    stages.module(upsampler.latent_upsampler, "upsample")
    stages.wrap(engine, "_decode_video", "vae")
    stages.wrap(engine, "_decode_audio", "audio")
    image = PIL.Image.new("RGB", (1280, 720), (200, 120, 40)) if args.image else None
    print(" ".join(f"{c:>10}" for c in COLUMNS))
    for item in args.sizes.split(","):
        resolution, duration = item.split(":")
        plan = plan_for(resolution, int(duration), recipe, args.image, args.reduced)
        stages.seconds.clear()
        calls[0] = 0
        begin = time.perf_counter()
        clip = engine.render(plan, image, None, lambda *_: None)
        with tempfile.TemporaryDirectory() as tmp, stages.stage("mux"):
            write_mp4(clip, plan.fps, Path(tmp) / "clip.mp4")
        total = time.perf_counter() - begin
        t = stages.seconds
        # What is left of the render: frames to uint8 and to the host, audio trimmed.
        t["frames"] = total - sum(t.values())
        peak = (clip.recipe or {}).get("peakGpuBytes")
        row = [f"{plan.width}x{plan.height}", str(plan.gen_frames)]
        keys = ("text", "stage1", "upsample", "stage2", "vae", "audio", "frames", "mux")
        row += [f"{t[k]:.2f}" if k in t else "-" for k in keys]
        row += [f"{total:.2f}", f"{peak / 2**30:.1f}" if peak else "-"]
        print(" ".join(f"{c:>10}" for c in row))


if __name__ == "__main__":
    main()
