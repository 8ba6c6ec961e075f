"""The distilled recipe on the tiny engine: the explicit 8-sigma schedule, and at 1080p two stages
(half the grid, x2 latent upsampler, 3 refine steps at full size), for text, first frame and last frame."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import PIL.Image
import pytest

from openreel.catalog import DISTILLED_SIGMAS, REFINE_SIGMAS
from openreel.engine.base import Cancelled


def _image(color: tuple[int, int, int]) -> PIL.Image.Image:
    return PIL.Image.new("RGB", (640, 360), color)


def _trace(engine, plan, first=None, last=None, on_step=None):  # type: ignore[no-untyped-def]
    """Render; return the clip, the token count of every transformer call, and the steps reported."""
    tokens: list[int] = []
    steps: list[tuple[int, int]] = []
    hook = engine.t2v.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: tokens.append(kw["hidden_states"].shape[1]), with_kwargs=True
    )
    upsamples: list[int] = []
    up_hook = engine.upsampler.latent_upsampler.register_forward_pre_hook(lambda *_: upsamples.append(1))
    try:
        clip = engine.render(plan, first, last, on_step or (lambda i, n: steps.append((i, n))))
    finally:
        hook.remove()
        up_hook.remove()
    return clip, tokens, steps, len(upsamples)


def test_fast_preset_at_1080p_renders_in_two_stages(tiny_engine, tiny_plan) -> None:
    assert tiny_engine.distilled and tiny_engine.upsampler is not None
    plan = tiny_plan(resolution="1080p", sigmas=DISTILLED_SIGMAS, refine_sigmas=REFINE_SIGMAS)
    assert plan.gen_width % 64 == 0 and plan.gen_height % 64 == 0
    clip, tokens, steps, upsamples = _trace(tiny_engine, plan)
    assert len(tokens) == 8 + 3 and upsamples == 1
    assert set(tokens[:8]) == {tokens[0]} and set(tokens[8:]) == {4 * tokens[0]}
    assert steps == [(i, 11) for i in range(1, 12)]
    assert clip.frames.shape == (24, 1080, 1920, 3)
    assert clip.audio is not None and clip.audio.shape == (2, 16000)


def test_without_refine_the_distilled_schedule_runs_single_stage(tiny_engine, tiny_plan) -> None:
    plan = tiny_plan(sigmas=DISTILLED_SIGMAS)
    assert plan.steps == 8
    clip, tokens, steps, upsamples = _trace(tiny_engine, plan)
    assert len(tokens) == 8 and len(set(tokens)) == 1 and upsamples == 0
    assert steps[-1] == (8, 8) and clip.frames.shape == (24, 720, 1280, 3)


@pytest.mark.parametrize("keyframes", ["first", "last", "both"])
def test_keyframes_condition_both_stages(tiny_engine, tiny_plan, keyframes: str) -> None:
    first = _image((220, 40, 40)) if keyframes in ("first", "both") else None
    last = _image((40, 40, 220)) if keyframes in ("last", "both") else None
    plan = tiny_plan(
        resolution="1080p",
        aspect_ratio="9:16",
        sigmas=DISTILLED_SIGMAS,
        refine_sigmas=REFINE_SIGMAS,
        has_first_frame=first is not None,
        has_last_frame=last is not None,
    )
    clip, tokens, _, upsamples = _trace(tiny_engine, plan, first, last)
    assert clip.frames.shape == (24, 1920, 1080, 3) and upsamples == 1 and len(tokens) == 11
    plain, *_ = _trace(tiny_engine, replace(plan, has_first_frame=False, has_last_frame=False))
    assert not np.array_equal(clip.frames, plain.frames)


def test_cancel_in_the_refine_stage(tiny_engine, tiny_plan) -> None:
    plan = tiny_plan(resolution="1080p", sigmas=DISTILLED_SIGMAS, refine_sigmas=REFINE_SIGMAS)

    def stop_in_stage_two(step: int, total: int) -> None:
        if step > 8:
            raise Cancelled()

    with pytest.raises(Cancelled):
        _trace(tiny_engine, plan, on_step=stop_in_stage_two)
