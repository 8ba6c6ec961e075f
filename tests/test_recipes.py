"""The recipe table (pure): each id's stages per LTX-2 generation, every constant against its source
in Lightricks' ltx-pipelines 1.0.0, and the generation and weights read off a checkpoint's configs."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from openreel.engine.recipes import (
    DISTILLED_SIGMAS,
    REFINE_SIGMAS,
    VERSIONS,
    detect_version,
    detect_weights,
    ltx2_scheduler_sigmas,
    recipe,
)

CONFIGS = json.loads((Path(__file__).parents[1] / "bench" / "ltx2-configs.json").read_text())


def _upstream_scheduler(steps: int) -> list[float]:
    """ltx_core/components/schedulers.py LTX2Scheduler.execute(steps) without a latent, spelled out."""
    mm = (2.05 - 0.95) / (4096 - 1024)
    shift = 4096 * mm + 0.95 - mm * 1024
    raw = [1.0 - i / steps for i in range(steps)]
    shifted = [math.exp(shift) / (math.exp(shift) + (1 / s - 1)) for s in raw]
    factor = (1.0 - shifted[-1]) / (1.0 - 0.1)
    return [1.0 - (1.0 - s) / factor for s in shifted]


@pytest.mark.parametrize("steps", [3, 30, 40])
def test_the_quality_schedule_is_ltx2_schedulers(steps: int) -> None:
    ours = ltx2_scheduler_sigmas(steps)
    assert ours == pytest.approx(_upstream_scheduler(steps), abs=1e-9)
    assert ours[0] == pytest.approx(1.0) and ours[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(ours))


def test_the_fast_recipe_is_the_distilled_pipeline_on_every_generation() -> None:
    for version in VERSIONS:
        first, second = recipe("fast", version).stages
        assert first.half and not second.half
        assert first.sigmas == DISTILLED_SIGMAS and first.noise_scale == 1.0
        assert second.sigmas == REFINE_SIGMAS and second.noise_scale == 0.909375
        assert first.weights == second.weights == "distilled"
        assert first.guidance.passes == second.guidance.passes == 1
        assert (first.negative, second.negative) == ("nag", None)


@pytest.mark.parametrize(("version", "steps", "block"), [("2.0", 40, 29), ("2.3", 30, 28), ("2.5", 30, 28)])
def test_the_quality_recipe_uses_each_generations_guider_params(version: str, steps: int, block: int) -> None:
    r = recipe("quality", version)
    first, second = r.stages
    g = first.guidance
    assert len(first.sigmas) == steps and first.weights == "dev" and first.negative == "cfg"
    assert (g.cfg, g.audio_cfg, g.stg, g.audio_stg, g.stg_blocks) == (3.0, 7.0, 1.0, 1.0, (block,))
    assert (g.modality, g.audio_modality, g.rescale, g.audio_rescale) == (3.0, 3.0, 0.7, 0.7)
    assert g.names == ("cfg", "stg", "modality") and g.passes == 4
    assert second.weights == "distilled" and second.guidance.passes == 1 and second.negative is None
    assert r.needs == {"dev", "distilled"}


def test_a_transformer_too_shallow_for_the_stg_block_has_no_stg_term() -> None:
    """The tiny test build (2 blocks): no perturbed pass that would perturb nothing; a real depth changes
    nothing."""
    shallow = recipe("quality", "2.0", transformer_blocks=2).stages[0].guidance
    assert (shallow.stg, shallow.audio_stg, shallow.stg_blocks) == (0.0, 0.0, ())
    assert shallow.names == ("cfg", "modality") and shallow.passes == 3
    assert recipe("quality", "2.0", transformer_blocks=48) == recipe("quality", "2.0")
    assert recipe("quality", "2.3", transformer_blocks=29).stages[0].guidance.stg_blocks == (28,)


def test_generation_constants() -> None:
    assert [recipe("fast", v).image_crf for v in VERSIONS] == [33, 33, 18]
    assert [recipe("fast", v).cross_timestep for v in VERSIONS] == [False, True, True]


@pytest.mark.parametrize(
    ("checkpoint", "version", "weights"),
    [
        ("LTX-2-19B-dev", "2.0", "dev"),
        ("LTX-2-19B-distilled", "2.0", "distilled"),
        ("LTX-2.3-22B-dev", "2.3", "dev"),
        ("LTX-2.3-22B-distilled", "2.3", "distilled"),
        ("LTX-2.5-22B", "2.5", "distilled"),
    ],
)
def test_generation_and_weights_from_the_published_configs(
    checkpoint: str, version: str, weights: str
) -> None:
    configs = CONFIGS[checkpoint]
    assert detect_version(configs["transformer"], configs["text_encoder"]) == version
    assert detect_weights(configs["scheduler"]) == weights


def test_the_description_shows_what_each_stage_does() -> None:
    shown = recipe("quality", "2.3").describe()
    assert shown["kind"] == "quality" and shown["version"] == "2.3" and shown["imageCrf"] == 33
    first, second = shown["stages"]  # type: ignore[misc]
    assert first["size"] == "half" and first["guidance"] == ["cfg", "stg", "modality"]
    assert first["passesPerStep"] == 4 and first["negativePrompt"] == "cfg" and len(first["sigmas"]) == 30
    assert second == {
        "size": "full",
        "sigmas": list(REFINE_SIGMAS),
        "noiseScale": 0.909375,
        "weights": "distilled",
        "guidance": [],
        "passesPerStep": 1,
        "negativePrompt": None,
    }
