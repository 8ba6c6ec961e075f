"""Engine options on the tiny engine: the text-encoder cache, fp8 weight storage, offload refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from openreel.engine import EngineOptions, load_engine
from openreel.settings import Settings


def _noop(step: int, total: int) -> None:
    pass


def _encoder_calls(engine) -> list[int]:
    calls: list[int] = []
    engine.t2v.text_encoder.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_prompts_are_encoded_once_and_give_the_same_clip(tiny_engine_cache: Path, tiny_plan) -> None:
    cached = load_engine(EngineOptions("tiny", prompt_cache_size=2), cache_dir=tiny_engine_cache)
    uncached = load_engine(EngineOptions("tiny", prompt_cache_size=0), cache_dir=tiny_engine_cache)
    calls, plain_calls = _encoder_calls(cached), _encoder_calls(uncached)
    plan = tiny_plan()
    first = cached.render(plan, None, None, _noop)
    assert len(calls) == 1
    again = cached.render(plan, None, None, _noop)
    assert len(calls) == 1 and cached.prompts.misses == 1
    reference = uncached.render(plan, None, None, _noop)
    assert len(plain_calls) == 1
    assert np.array_equal(first.frames, again.frames) and np.array_equal(first.frames, reference.frames)
    assert first.audio is not None and again.audio is not None and np.array_equal(first.audio, again.audio)

    cached.render(tiny_plan(prompt="a white owl"), None, None, _noop)
    cached.render(tiny_plan(negative_prompt="blurry", guidance_scale=3.0), None, None, _noop)
    assert cached.prompts.misses == 3
    cached.render(plan, None, None, _noop)  # evicted: the cache holds the two newest
    assert cached.prompts.misses == 4


def test_fp8_stores_weights_in_float8_and_still_renders(
    tiny_engine_cache: Path, tiny_plan, tiny_engine
) -> None:
    fp8 = load_engine(EngineOptions("tiny", precision="fp8"), cache_dir=tiny_engine_cache)
    assert torch.float8_e4m3fn in {p.dtype for p in fp8.t2v.transformer.parameters()}
    assert torch.float8_e4m3fn in {p.dtype for p in fp8.t2v.text_encoder.parameters()}
    plan = tiny_plan()
    clip = fp8.render(plan, None, None, _noop)
    full = tiny_engine.render(plan, None, None, _noop)
    assert clip.frames.shape == full.frames.shape and not np.array_equal(clip.frames, full.frames)


def test_offload_needs_a_gpu_and_bad_modes_are_refused(tiny_engine_cache: Path) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        load_engine(EngineOptions("tiny", offload="model"), cache_dir=tiny_engine_cache)
    with pytest.raises(ValidationError):
        Settings(precision="fp4")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(offload="disk")  # type: ignore[arg-type]
