"""How each model id is rendered on each LTX-2 generation: stages, noise schedules, guidance, weights.

Pure data and arithmetic, shared by the engine (which drives the pipelines from it), the catalog and
``/v2/models`` (which show it). Every constant comes from Lightricks' reference code, pinned at
``ltx-pipelines==1.0.0`` / ``ltx-core==1.0.0`` unless a line says otherwise; ``docs/recipes.md`` lists
them with their sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Version = Literal["2.0", "2.3", "2.5"]
VERSIONS: tuple[Version, ...] = ("2.0", "2.3", "2.5")
# What a model id asks for: "fast" (the distilled two-stage recipe) or "quality" (dev weights with
# full guidance, then the distilled refine).
RecipeKind = Literal["fast", "quality"]
RECIPE_KINDS: tuple[RecipeKind, ...] = ("fast", "quality")
Weights = Literal["dev", "distilled"]

# ltx_pipelines/utils/constants.py: DISTILLED_SIGMA_VALUES and STAGE_2_DISTILLED_SIGMA_VALUES (both end
# in 0.0, which the scheduler appends here). The refine stage re-noises to its first sigma
# (distilled.py: noise_scale=stage_2_sigmas[0]).
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
REFINE_SIGMAS = (0.909375, 0.725, 0.421875)
# ltx_core/components/schedulers.py LTX2Scheduler.execute defaults, as ti2vid_two_stages.py calls it
# (no latent, so the token count is the 4096 anchor).
_SHIFT_BASE, _SHIFT_MAX = 0.95, 2.05
_SHIFT_ANCHORS = (1024, 4096)
_TERMINAL = 0.1
# ltx_pipelines/utils/constants.py DEFAULT_IMAGE_CRF; LTX-2.5 (Lightricks' internal 2.4) was trained
# against 18: LTX_2_4_IMAGE_CRF in the repository's constants.py after 1.0.0, and diffusers 0.42.1
# pipelines/ltx2/utils.py LTX2_5_IMAGE_CRF.
IMAGE_CRF: dict[Version, int] = {"2.0": 33, "2.3": 33, "2.5": 18}
# ltx_pipelines/utils/constants.py: LTX_2_PARAMS.num_inference_steps (2.0), LTX_2_3_PARAMS (2.3; 2.4
# and so 2.5 inherit it, LTX_2_4_PARAMS after 1.0.0).
QUALITY_STEPS: dict[Version, int] = {"2.0": 40, "2.3": 30, "2.5": 30}
# Same tables: the STG block of each generation's video and audio guider.
STG_BLOCKS: dict[Version, tuple[int, ...]] = {"2.0": (29,), "2.3": (28,), "2.5": (28,)}
# diffusers 0.42.1 LTX2ConditionPipeline.__call__(use_cross_timestep): cross-modal modulation by the other
# modality's sigma is the 2.3/2.5 behaviour, off for 2.0.
CROSS_TIMESTEP: dict[Version, bool] = {"2.0": False, "2.3": True, "2.5": True}
# ltx_pipelines/utils/constants.py DEFAULT_NEGATIVE_PROMPT: the CLI's --negative-prompt default for the
# guided pipelines, used when a quality request brings none.
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)


@dataclass(frozen=True)
class Guidance:
    """One stage's guidance, as ltx-core's MultiModalGuiderParams (video and audio guider)."""

    cfg: float = 1.0
    audio_cfg: float = 1.0
    stg: float = 0.0
    audio_stg: float = 0.0
    stg_blocks: tuple[int, ...] = ()
    modality: float = 1.0
    audio_modality: float = 1.0
    rescale: float = 0.0
    audio_rescale: float = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        """The guidance terms that cost a transformer pass, in ltx-core's order."""
        return tuple(
            name
            for name, on in (
                ("cfg", self.cfg != 1.0 or self.audio_cfg != 1.0),
                ("stg", self.stg != 0.0 or self.audio_stg != 0.0),
                ("modality", self.modality != 1.0 or self.audio_modality != 1.0),
            )
            if on
        )

    @property
    def passes(self) -> int:
        """Transformer passes per step: the conditional one plus one per guidance term."""
        return 1 + len(self.names)


@dataclass(frozen=True)
class NAG:
    """Normalized Attention Guidance (arXiv 2505.21179) on the text cross-attention: a negative prompt
    that acts without CFG, inside one transformer pass. Values: the authors' defaults (scale 5, tau 2.5,
    alpha 0.25; their ComfyUI-NAG node)."""

    scale: float = 5.0
    tau: float = 2.5
    alpha: float = 0.25


@dataclass(frozen=True)
class Stage:
    """One denoising pass. ``half``: at half the output grid (stage 1 of a two-stage recipe)."""

    half: bool
    sigmas: tuple[float, ...]
    noise_scale: float
    weights: Weights
    guidance: Guidance = field(default_factory=Guidance)
    # How a negative prompt acts in this stage: through CFG's negative branch, through NAG, or not at all.
    negative: Literal["cfg", "nag"] | None = None


@dataclass(frozen=True)
class Recipe:
    kind: RecipeKind
    version: Version
    stages: tuple[Stage, ...]
    image_crf: int
    cross_timestep: bool
    nag: NAG = field(default_factory=NAG)

    @property
    def needs(self) -> frozenset[Weights]:
        return frozenset(stage.weights for stage in self.stages)

    def describe(self) -> dict[str, object]:
        """The recipe as ``/v2/models`` shows it."""
        return {
            "kind": self.kind,
            "version": self.version,
            "imageCrf": self.image_crf,
            "stages": [
                {
                    "size": "half" if s.half else "full",
                    "sigmas": list(s.sigmas),
                    "noiseScale": s.noise_scale,
                    "weights": s.weights,
                    "guidance": list(s.guidance.names),
                    "passesPerStep": s.guidance.passes,
                    "negativePrompt": s.negative,
                }
                for s in self.stages
            ],
        }


def ltx2_scheduler_sigmas(steps: int) -> tuple[float, ...]:
    """LTX2Scheduler's schedule without its final 0: linear in t, shifted for 4096 tokens, then stretched
    so the last non-zero sigma is the 0.1 terminal (ltx_core/components/schedulers.py)."""
    x1, x2 = _SHIFT_ANCHORS
    slope = (_SHIFT_MAX - _SHIFT_BASE) / (x2 - x1)
    shift = math.exp(x2 * slope + _SHIFT_BASE - slope * x1)
    shifted = [shift / (shift + (1 / (1 - i / steps) - 1)) for i in range(steps)]
    scale = (1.0 - shifted[-1]) / (1.0 - _TERMINAL)
    return tuple(1.0 - (1.0 - s) / scale for s in shifted)


def _refine() -> Stage:
    """Stage 2 of every upstream two-stage pipeline: the x2-upsampled latent re-noised to 0.909375 and
    refined in 3 distilled steps, unguided (distilled.py, ti2vid_two_stages.py, keyframe_interpolation.py)."""
    return Stage(half=False, sigmas=REFINE_SIGMAS, noise_scale=REFINE_SIGMAS[0], weights="distilled")


def recipe(kind: RecipeKind, version: Version, transformer_blocks: int | None = None) -> Recipe:
    """``fast``: DistilledPipeline (distilled.py): 8 distilled sigmas at half size, no guidance, then the
    refine. ``quality``: TI2VidTwoStagesPipeline (ti2vid_two_stages.py): the dev weights at half size on
    LTX2Scheduler's schedule with the generation's guider params (CFG 3, audio CFG 7, STG 1, rescale 0.7,
    modality 3), then the refine with the distilled LoRA. A negative prompt steers the fast stage 1 through
    NAG, and the quality stage 1 through CFG; refine steps never take it (upstream never guides stage 2).
    ``transformer_blocks``: the loaded transformer's depth, where known. A build too shallow for the STG
    block (the tiny test checkpoint) has no STG term: a perturbed pass that perturbs nothing would cost a
    transformer pass per step and change nothing."""
    if kind == "fast":
        first = Stage(
            half=True, sigmas=DISTILLED_SIGMAS, noise_scale=1.0, weights="distilled", negative="nag"
        )
    else:
        blocks = tuple(b for b in STG_BLOCKS[version] if transformer_blocks is None or b < transformer_blocks)
        stg = 1.0 if blocks else 0.0
        guidance = Guidance(
            cfg=3.0,
            audio_cfg=7.0,
            stg=stg,
            audio_stg=stg,
            stg_blocks=blocks,
            modality=3.0,
            audio_modality=3.0,
            rescale=0.7,
            audio_rescale=0.7,
        )
        first = Stage(
            half=True,
            sigmas=ltx2_scheduler_sigmas(QUALITY_STEPS[version]),
            noise_scale=1.0,
            weights="dev",
            guidance=guidance,
            negative="cfg",
        )
    return Recipe(
        kind=kind,
        version=version,
        stages=(first, _refine()),
        image_crf=IMAGE_CRF[version],
        cross_timestep=CROSS_TIMESTEP[version],
    )


def detect_version(transformer: dict[str, object], text_encoder: dict[str, object] | None) -> Version:
    """The generation, from the configs diffusers' converter writes (scripts/convert_ltx2_to_diffusers.py):
    2.5 adds the keyframe position embedding and a Gemma 4 encoder, 2.3 gated attention; 2.0 has neither."""
    text_type = str((text_encoder or {}).get("model_type", ""))
    if transformer.get("use_keyframes_abs_pos_embedding") or text_type.startswith("gemma4"):
        return "2.5"
    if transformer.get("gated_attn") or transformer.get("cross_attn_mod"):
        return "2.3"
    return "2.0"


def detect_weights(scheduler: dict[str, object]) -> Weights:
    """Dev or distilled weights: the converter gives distilled checkpoints a scheduler that neither shifts
    nor stretches (their sigmas are used as given) and dev ones the dynamic-shift schedule."""
    return "dev" if scheduler.get("use_dynamic_shifting") else "distilled"
