"""LTX-2 at its published full-size architecture with random weights (no download): time per stage
and peak GPU memory of a real render through openreel's engine, for 720p and 1080p at 4 and 8 s.

The configs in ``ltx2-configs.json`` are the published ones (see their ``_sources``); the weights are
PyTorch's random init, so speed and memory are the model's and the pictures are noise. Built on the
GPU in bf16. ``--reduced`` cuts every stack to one layer (widths stay real) and renders a small clip,
so the same code proves itself on a CPU: its figures say nothing about the real model.

    python bench/full_size.py                         # GPU: LTX-2-19B-distilled, 720p/1080p x 4/8 s
    python bench/full_size.py --reduced               # CPU smoke run
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

from openreel.catalog import SamplerPreset, load_catalog
from openreel.engine.ltx2 import LTX2Engine
from openreel.engine.mux import write_mp4
from openreel.engine.plan import RenderPlan, plan_render
from openreel.engine.tiny import build_tokenizer

CONFIGS = Path(__file__).with_name("ltx2-configs.json")
SIZES = [("720p", 4), ("720p", 8), ("1080p", 4), ("1080p", 8)]
COLUMNS = [
    "output",
    "frames",
    "text s",
    "denoise s",
    "upsample s",
    "vae s",
    "audio s",
    "mux s",
    "total s",
    "peak GiB",
]


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


def plan_for(resolution: str, duration: int, preset: SamplerPreset, reduced: bool) -> RenderPlan:
    return plan_render(
        prompt="a red fox running through fresh snow at dawn, cinematic",
        negative_prompt=None,
        seed=1,
        duration_s=1 if reduced else duration,
        resolution=resolution,
        aspect_ratio="16:9",
        generate_audio=True,
        steps=preset.steps,
        guidance_scale=preset.guidance_scale,
        negative_guidance_scale=preset.negative_guidance_scale,
        has_first_frame=False,
        has_last_frame=False,
        grid_scale=0.125 if reduced else 1.0,
        sigmas=preset.sigmas,
        refine_sigmas=preset.refine_for(resolution),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="LTX-2-19B-distilled", help="a key of ltx2-configs.json")
    parser.add_argument("--model", default="veo-3.1-fast", help="the public model id whose preset to run")
    parser.add_argument("--reduced", action="store_true", help="one layer per stack, small clip (CPU)")
    parser.add_argument("--sizes", default=",".join(f"{r}:{d}" for r, d in SIZES), help="e.g. 720p:4,1080p:8")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    started = time.perf_counter()
    pipe, upsampler = build_pipeline(args.checkpoint, device, dtype, args.reduced)
    preset = load_catalog().models[args.model].preset
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

    engine = LTX2Engine(
        pipe, name="bench", grid_scale=1.0, random_weights=True, device=device, upsampler=upsampler
    )
    print(
        f"{args.model}: distilled schedule {engine.distilled}, two stages at {preset.refine_at or 'no size'}"
    )
    stages = Stages(device)
    stages.wrap(engine.t2v, "encode_prompt", "text")
    stages.module(engine.t2v.transformer, "denoise")
    stages.wrap(engine.t2v.vae, "decode", "vae")
    stages.wrap(engine.t2v.audio_vae, "decode", "audio")
    stages.module(engine.t2v.vocoder, "audio")
    stages.module(upsampler.latent_upsampler, "upsample")
    print(" ".join(f"{c:>9}" for c in COLUMNS))
    for item in args.sizes.split(","):
        resolution, duration = item.split(":")
        plan = plan_for(resolution, int(duration), preset, args.reduced)
        stages.seconds.clear()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        begin = time.perf_counter()
        clip = engine.render(plan, None, None, lambda *_: None)
        with tempfile.TemporaryDirectory() as tmp, stages.stage("mux"):
            write_mp4(clip, plan.fps, Path(tmp) / "clip.mp4")
        total = time.perf_counter() - begin
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device == "cuda" else "-"
        t = stages.seconds
        row = [f"{plan.width}x{plan.height}", str(plan.gen_frames)]
        row += [
            f"{t[k]:.2f}" if k in t else "-" for k in ("text", "denoise", "upsample", "vae", "audio", "mux")
        ]
        row += [f"{total:.2f}", peak]
        print(" ".join(f"{c:>9}" for c in row))


if __name__ == "__main__":
    main()
