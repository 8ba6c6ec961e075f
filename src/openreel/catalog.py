"""The public model ids, what each one allows, what it costs and which sampler preset serves it.

One table, so an operator can read (and override, see ``Settings.prices_file``) every price and
rule in one place. Prices for veo-3, veo-3-fast and veo-3.1-lite are not published by Apiframe;
they are set by analogy: veo-3 costs what veo-3.1 does, veo-3-fast what veo-3.1-fast does, and
lite sits one notch under fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class SamplerPreset:
    """How the diffusion pipeline is driven for a model id.

    ``guidance_scale`` 1 means classifier-free guidance is off (the distilled regime). A negative
    prompt only acts under guidance, so a request that carries one is sampled with
    ``negative_guidance_scale`` instead: the user pays in time, never in a silently ignored field.
    """

    steps: int
    guidance_scale: float
    negative_guidance_scale: float = 3.0
    # Distilled checkpoints: an explicit schedule, and at ``refine_at`` resolutions two stages (half
    # size, x2 latent upsampler, ``refine_sigmas``). Engines without either run ``steps`` single-stage.
    sigmas: tuple[float, ...] | None = None
    refine_sigmas: tuple[float, ...] | None = None
    refine_at: tuple[str, ...] = ()

    def refine_for(self, resolution: str) -> tuple[float, ...] | None:
        return self.refine_sigmas if resolution in self.refine_at else None


@dataclass(frozen=True)
class ModelSpec:
    id: str
    label: str
    description: str
    prices: dict[str, int]
    preset: SamplerPreset
    durations: tuple[int, ...] = (4, 6, 8)
    default_duration: int = 8
    audio: bool = True
    accepts_audio_flag: bool = True
    accepts_reference_images: bool = True
    backed_by: str = "LTX-2 (Lightricks) through diffusers"
    resolutions: tuple[str, ...] = ("720p", "1080p")
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16")

    def variant(self, duration: int, generate_audio: bool) -> str:
        return f"{duration}s-audio" if generate_audio else f"{duration}s"

    def price(self, duration: int, generate_audio: bool) -> int:
        return self.prices[self.variant(duration, generate_audio)]


def _veo3_prices(a: int, b: int, c: int, d: int, e: int, f: int) -> dict[str, int]:
    return {"4s": a, "4s-audio": b, "6s": c, "6s-audio": d, "8s": e, "8s-audio": f}


# diffusers.pipelines.ltx2.utils (0.42.1), equal to Lightricks' ltx_pipelines constants.
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
REFINE_SIGMAS = (0.909375, 0.725, 0.421875)

_FAST = SamplerPreset(
    steps=8, guidance_scale=1.0, sigmas=DISTILLED_SIGMAS, refine_sigmas=REFINE_SIGMAS, refine_at=("1080p",)
)
_QUALITY = SamplerPreset(steps=30, guidance_scale=3.0)
_LITE = SamplerPreset(steps=6, guidance_scale=1.0)

_VEO_31_FAST = ModelSpec(
    id="veo-3.1-fast",
    label="Veo 3.1 Fast",
    description="Fast video with synchronized audio, first/last frame control.",
    prices=_veo3_prices(3, 5, 4, 6, 5, 8),
    preset=_FAST,
)
_VEO_31 = ModelSpec(
    id="veo-3.1",
    label="Veo 3.1",
    description="Higher quality video with synchronized audio (more steps, guidance).",
    prices=_veo3_prices(5, 10, 8, 15, 10, 20),
    preset=_QUALITY,
)

DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    _VEO_31_FAST,
    _VEO_31,
    ModelSpec(
        id="veo-3.1-lite",
        label="Veo 3.1 Lite",
        description="Cheapest video with audio: fewest steps.",
        accepts_audio_flag=False,
        accepts_reference_images=False,
        prices={"4s-audio": 3, "6s-audio": 4, "8s-audio": 6},
        preset=_LITE,
    ),
    replace(_VEO_31, id="veo-3", label="Veo 3", description="Alias of the Veo 3.1 quality preset."),
    replace(
        _VEO_31_FAST, id="veo-3-fast", label="Veo 3 Fast", description="Alias of the Veo 3.1 Fast preset."
    ),
    ModelSpec(
        id="veo-2",
        label="Veo 2",
        description="Silent video, 5 to 8 seconds.",
        durations=(5, 6, 7, 8),
        default_duration=5,
        audio=False,
        prices={"5s": 15, "6s": 18, "7s": 20, "8s": 22},
        preset=_QUALITY,
    ),
)


@dataclass(frozen=True)
class Catalog:
    models: dict[str, ModelSpec]

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)

    @property
    def ids(self) -> list[str]:
        return list(self.models)


def load_catalog(prices_file: Path | None = None) -> Catalog:
    """The default table, with prices replaced from a JSON file ``{"model-id": {"4s": 3, ...}}``."""
    models = {m.id: m for m in DEFAULT_MODELS}
    if prices_file is not None:
        overrides: dict[str, dict[str, int]] = json.loads(prices_file.read_text())
        for model_id, prices in overrides.items():
            if model_id not in models:
                raise ValueError(f"prices file names unknown model {model_id!r}")
            merged = {**models[model_id].prices, **{k: int(v) for k, v in prices.items()}}
            models[model_id] = replace(models[model_id], prices=merged)
    return Catalog(models=models)
