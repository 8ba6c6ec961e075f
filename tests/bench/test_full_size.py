"""bench/full_size.py: its run list and its stage clock (the renders themselves need the full models)."""

from __future__ import annotations

import time

import pytest
from full_size import Run, Stages, parse_runs


def test_runs_parse_in_order_with_the_precision_switch() -> None:
    runs = parse_runs("fast:720p:8,diffusers:1080p:8,fp8,fast+image:720p:4,quality:720p:8")
    assert runs == [
        Run("fast", False, "720p", 8),
        Run("diffusers", False, "1080p", 8),
        "fp8",
        Run("fast", True, "720p", 4),
        Run("quality", False, "720p", 8),
    ]
    assert [r.label for r in runs if isinstance(r, Run)] == ["fast", "diffusers", "fast+image", "quality"]
    extension = parse_runs("fast+extend+enhance:720p:7")
    assert extension == [Run("fast", False, "720p", 7, enhance=True, extend=True)]
    assert extension[0].label == "fast+extend+enhance"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "fast:720p",  # no duration
        "fast:4k:8",  # no such resolution
        "turbo:720p:8",  # no such recipe
        "fast+last:720p:8",  # only +image
        "diffusers+image:720p:8",  # the baseline is text-to-video
        "fast+extend:1080p:7",  # an extension is 720p
        "fast+extend:720p:8",  # and adds 7 s
        "fast+image+extend:720p:7",  # from the clip's frames, not an image
        "fp8,fast:720p:8,fp8",  # quantizing is one way
        "fp8,diffusers:720p:8",  # the baseline runs bf16
    ],
)
def test_bad_run_lists_are_refused(text: str) -> None:
    with pytest.raises(SystemExit):
        parse_runs(text)


def test_a_stage_inside_another_is_taken_out_of_the_outer_time() -> None:
    stages = Stages("cpu")
    with stages.stage("stage2"):
        time.sleep(0.02)
        with stages.stage("vae"):
            time.sleep(0.05)
    assert stages.seconds["vae"] >= 0.05
    assert 0.02 <= stages.seconds["stage2"] < 0.05


def test_wrapped_methods_are_timed_numbered_and_put_back() -> None:
    class Engine:
        def sample(self) -> str:
            time.sleep(0.01)
            return "latents"

    engine, stages = Engine(), Stages("cpu")
    with stages.wrapped(engine, "sample", "stage{n}"):
        assert engine.sample() == engine.sample() == "latents"
    assert set(stages.seconds) == {"stage1", "stage2"}
    assert "sample" not in vars(engine)
