"""The public model ids, what each one allows, what it costs and which recipe renders it.

One table, so an operator can read (and override, see ``Settings.prices_file``) every price and
rule in one place. Prices for veo-3, veo-3-fast and veo-3.1-lite are not published by Apiframe;
they are set by analogy: veo-3 costs what veo-3.1 does, veo-3-fast what veo-3.1-fast does, and
lite sits one notch under fast. The recipes themselves are in ``engine/recipes.py``: the fast ids run
Lightricks' distilled recipe, the quality ids their dev two-stage recipe; lite runs the distilled one
too (the distilled weights were trained for one schedule, so a cheaper id cannot honestly run a
shorter one), and veo-2 the quality recipe with its sound dropped.

Extension is priced per second added (``extend-1s`` and ``extend-1s-audio``, in the same table):
Veo 3.1 and 3.1 Fast extend, as Google's do, at about their own per-second price; lite and veo-2 do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from openreel.engine.recipes import RecipeKind

# The prices of a second added by an extension, silent and with audio: a model extends with both.
EXTEND_VARIANTS = frozenset({"extend-1s", "extend-1s-audio"})


@dataclass(frozen=True)
class ModelSpec:
    id: str
    label: str
    description: str
    prices: dict[str, int]
    recipe: RecipeKind
    durations: tuple[int, ...] = (4, 6, 8)
    default_duration: int = 8
    audio: bool = True
    accepts_audio_flag: bool = True
    accepts_reference_images: bool = True
    backed_by: str = "LTX-2 (Lightricks) through diffusers"
    resolutions: tuple[str, ...] = ("720p", "1080p")
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16")

    def variant(self, duration: int, generate_audio: bool, *, extend: bool = False) -> str:
        """The price table's key: a clip of ``duration`` s, or (``extend``) one second added to a clip."""
        seconds = 1 if extend else duration
        return ("extend-" if extend else "") + (f"{seconds}s-audio" if generate_audio else f"{seconds}s")

    def price(self, duration: int, generate_audio: bool, *, extend: bool = False) -> int:
        """Credits for one video: a clip of ``duration`` s, or ``duration`` s added to one (``extend``)."""
        per = self.prices[self.variant(duration, generate_audio, extend=extend)]
        return per * duration if extend else per

    @property
    def extends(self) -> bool:
        """Whether the table prices a second added, with sound and without (a prices file may add both)."""
        return self.prices.keys() >= EXTEND_VARIANTS

    @property
    def clip_prices(self) -> dict[str, int]:
        """The prices of whole clips, without the per-second extension prices."""
        return {k: v for k, v in self.prices.items() if not k.startswith("extend-")}


def _veo3_prices(
    a: int, b: int, c: int, d: int, e: int, f: int, *, extend: tuple[int, int] | None = None
) -> dict[str, int]:
    """Clip prices by duration, and optionally the price of a second added silent and with audio."""
    prices = {"4s": a, "4s-audio": b, "6s": c, "6s-audio": d, "8s": e, "8s-audio": f}
    if extend is not None:
        prices |= {"extend-1s": extend[0], "extend-1s-audio": extend[1]}
    return prices


_VEO_31_FAST = ModelSpec(
    id="veo-3.1-fast",
    label="Veo 3.1 Fast",
    description="Fast video with synchronized audio, first/last frame control.",
    prices=_veo3_prices(3, 5, 4, 6, 5, 8, extend=(1, 1)),
    recipe="fast",
)
_VEO_31 = ModelSpec(
    id="veo-3.1",
    label="Veo 3.1",
    description="Higher quality video with synchronized audio (dev weights, full guidance).",
    prices=_veo3_prices(5, 10, 8, 15, 10, 20, extend=(2, 3)),
    recipe="quality",
)

DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    _VEO_31_FAST,
    _VEO_31,
    ModelSpec(
        id="veo-3.1-lite",
        label="Veo 3.1 Lite",
        description="Cheapest video with audio (the fast recipe at a lower price).",
        accepts_audio_flag=False,
        accepts_reference_images=False,
        prices={"4s-audio": 3, "6s-audio": 4, "8s-audio": 6},
        recipe="fast",
    ),
    replace(_VEO_31, id="veo-3", label="Veo 3", description="Alias of Veo 3.1."),
    replace(_VEO_31_FAST, id="veo-3-fast", label="Veo 3 Fast", description="Alias of Veo 3.1 Fast."),
    ModelSpec(
        id="veo-2",
        label="Veo 2",
        description="Silent video, 5 to 8 seconds.",
        durations=(5, 6, 7, 8),
        default_duration=5,
        audio=False,
        prices={"5s": 15, "6s": 18, "7s": 20, "8s": 22},
        recipe="quality",
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

    @property
    def extending(self) -> list[str]:
        """The ids that continue clips."""
        return [m.id for m in self.models.values() if m.extends]


def load_catalog(prices_file: Path | None = None) -> Catalog:
    """The default table, with prices replaced from a JSON file ``{"model-id": {"4s": 3, ...}}``: a
    model's own variants, and the two of an extension; a file that says anything else is refused."""
    models = {m.id: m for m in DEFAULT_MODELS}
    if prices_file is None:
        return Catalog(models=models)
    overrides = json.loads(prices_file.read_text())
    if not isinstance(overrides, dict):
        raise ValueError('it must map model ids to prices, such as {"veo-3.1-fast": {"8s-audio": 10}}')
    for model_id, prices in overrides.items():
        model = models.get(model_id)
        if model is None:
            raise ValueError(f"prices file names unknown model {model_id!r}")
        if not isinstance(prices, dict):
            raise ValueError(f'{model_id} must map variants to credits, such as {{"8s-audio": 10}}')
        variants = model.prices.keys() | EXTEND_VARIANTS
        for variant, credits in prices.items():
            if variant not in variants:
                raise ValueError(
                    f"{model_id} has no variant {variant!r}; it has {', '.join(sorted(variants))}"
                )
            if type(credits) is not int or credits < 0:
                raise ValueError(f"{model_id} {variant}: {credits!r} is not a whole number of credits")
        merged = {**model.prices, **prices}
        if len(merged.keys() & EXTEND_VARIANTS) == 1:
            raise ValueError(f"{model_id}: extend-1s and extend-1s-audio are priced together or not at all")
        models[model_id] = replace(model, prices=merged)
    return Catalog(models=models)
