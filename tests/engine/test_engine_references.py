"""Reference images through the IC-LoRA path on the tiny engine, with a random tiny adapter saved in
Lightricks' file format: the sheet, the adapter switched on only for reference renders, the reference
tokens over every frame, keyframes and two stages beside it, and a missing adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from openreel.engine import EngineOptions, load_engine
from openreel.engine.base import Clip
from openreel.engine.ltx2 import REFERENCE_ADAPTER, SHEET_BACKGROUND, reference_sheet
from openreel.engine.tiny import save_tiny_reference_adapter

# One worker runs this module, so its module-scoped fixtures start once.
pytestmark = pytest.mark.xdist_group("engine_references")


def _noop(i: int, total: int) -> None:
    pass


def _noise(width: int, height: int, seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Adapter files live apart from the shared engine cache, which other tests expect to hold one dir."""
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="module")
def ref_engine(tiny_engine_cache: Path, adapters: Path) -> Any:
    adapter = save_tiny_reference_adapter(adapters / "tiny-ic-lora.safetensors")
    return load_engine(EngineOptions("tiny", reference_adapter=str(adapter)), cache_dir=tiny_engine_cache)


REFS = (_noise(300, 400, 1), _noise(500, 300, 2))


def _render(engine: Any, plan: Any, refs: tuple[PIL.Image.Image, ...] = REFS, **images: Any) -> Clip:
    return engine.render(plan, images.get("first"), images.get("last"), _noop, references=refs)


def _tokens(engine: Any, render: Any) -> list[int]:
    """The video token count of every transformer call made by ``render()``."""
    tokens: list[int] = []
    hook = engine.pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: tokens.append(kw["hidden_states"].shape[1]), with_kwargs=True
    )
    try:
        render()
    finally:
        hook.remove()
    return tokens


def test_the_sheet_shows_each_image_whole_on_white() -> None:
    red = PIL.Image.new("RGB", (100, 200), (255, 0, 0))
    blue = PIL.Image.new("RGB", (200, 300), (0, 0, 255))
    sheet = np.asarray(reference_sheet([red, blue], 400, 200))
    assert sheet.shape == (200, 400, 3)
    reds = np.argwhere((sheet == (255, 0, 0)).all(-1))
    blues = np.argwhere((sheet == (0, 0, 255)).all(-1))
    # Two portrait images side by side, each as tall as the sheet, aspect kept (1:2 and 2:3).
    assert (np.ptp(reds[:, 0]) + 1, np.ptp(reds[:, 1]) + 1) == (200, 100)
    assert np.ptp(blues[:, 0]) + 1 == 200 and abs(np.ptp(blues[:, 1]) + 1 - 133) <= 1
    assert reds[:, 1].max() < 200 <= blues[:, 1].min()
    assert len(reds) == 200 * 100 and tuple(sheet[0, 0]) == SHEET_BACKGROUND


def test_the_adapter_is_off_outside_reference_renders(ref_engine, tiny_engine, tiny_plan) -> None:
    plan = tiny_plan()
    before = ref_engine.render(plan, None, None, _noop)
    _render(ref_engine, tiny_plan(reference_count=2))
    after = ref_engine.render(plan, None, None, _noop)
    plain = tiny_engine.render(plan, None, None, _noop)
    assert np.array_equal(before.frames, plain.frames) and np.array_equal(after.frames, plain.frames)


def test_references_guide_the_render(ref_engine, tiny_plan) -> None:
    plan = tiny_plan(reference_count=2)
    a = _render(ref_engine, plan)
    again = _render(ref_engine, plan)
    other = _render(ref_engine, plan, refs=(REFS[0], _noise(500, 300, 3)))
    assert a.frames.shape == (24, 720, 1280, 3) and a.audio is not None and a.audio.shape == (2, 16000)
    assert np.array_equal(a.frames, again.frames) and np.array_equal(a.audio, again.audio)
    assert not np.array_equal(a.frames, other.frames)
    plain = ref_engine.render(tiny_plan(), None, None, _noop)
    assert not np.array_equal(a.frames, plain.frames)


def test_the_adapter_weights_act_on_reference_renders(
    ref_engine, tiny_engine_cache, adapters, tiny_plan
) -> None:
    other_adapter = save_tiny_reference_adapter(adapters / "rank2.safetensors", rank=2)
    other = load_engine(
        EngineOptions("tiny", reference_adapter=str(other_adapter)), cache_dir=tiny_engine_cache
    )
    plan = tiny_plan(reference_count=2)
    assert not np.array_equal(_render(ref_engine, plan).frames, _render(other, plan).frames)


def test_the_sheet_is_looped_over_every_frame_of_stage_one(ref_engine, tiny_plan) -> None:
    """Reference tokens as many as the video's: a still sheet played for the whole clip. Stage 1 (half
    the grid) carries it; the refine steps at full size run without it, as in Lightricks' IC-LoRA
    two-stage pipeline."""
    plain = _tokens(ref_engine, lambda: ref_engine.render(tiny_plan(), None, None, _noop))
    clip: list[Clip] = []
    ref = _tokens(ref_engine, lambda: clip.append(_render(ref_engine, tiny_plan(reference_count=2))))
    half = plain[0]
    assert plain == [half] * 8 + [4 * half] * 3
    assert ref == [2 * half] * 8 + [4 * half] * 3
    sheet = [c for c in clip[0].recipe["conditions"] if c["kind"] == "reference"]
    frames = tiny_plan().gen_frames  # the sheet is played as a video as long as the render
    assert sheet == [
        {"kind": "reference", "stage": 0, "width": 160, "height": 96, "pixelFrame": None, "frames": frames}
    ]


def test_references_with_keyframes_and_in_two_stages(ref_engine, tiny_plan) -> None:
    first, last = _noise(640, 360, 5), _noise(640, 360, 6)
    keyed = tiny_plan(reference_count=1, has_first_frame=True, has_last_frame=True)
    clip = _render(ref_engine, keyed, refs=REFS[:1], first=first, last=last)
    no_refs = ref_engine.render(tiny_plan(has_first_frame=True, has_last_frame=True), first, last, _noop)
    assert clip.frames.shape == no_refs.frames.shape and not np.array_equal(clip.frames, no_refs.frames)

    big = tiny_plan(reference_count=3, resolution="1080p")
    refs = (*REFS, _noise(200, 200, 4))
    clip = _render(ref_engine, big, refs=refs)
    assert clip.frames.shape == (24, 1080, 1920, 3)


def test_a_plan_must_count_the_references(ref_engine, tiny_plan) -> None:
    with pytest.raises(ValueError, match="reference_count"):
        _render(ref_engine, tiny_plan())


def test_a_missing_adapter_fails_reference_renders_only(tiny_engine_cache, tiny_plan) -> None:
    engine = load_engine(
        EngineOptions("tiny", reference_adapter="/nowhere/ic-lora.safetensors"), cache_dir=tiny_engine_cache
    )
    assert engine.render(tiny_plan(), None, None, _noop).frames.shape == (24, 720, 1280, 3)
    with pytest.raises(
        RuntimeError, match=r"missing on this worker: /nowhere/ic-lora\.safetensors is not a file"
    ):
        _render(engine, tiny_plan(reference_count=2))


def test_fp8_keeps_the_adapter_in_the_compute_dtype(tiny_engine_cache, adapters, tiny_plan) -> None:
    adapter = save_tiny_reference_adapter(adapters / "tiny-ic-lora.safetensors")
    engine = load_engine(
        EngineOptions("tiny", precision="fp8", reference_adapter=str(adapter)), cache_dir=tiny_engine_cache
    )
    layer = engine.pipe.transformer.transformer_blocks[0].attn1.to_q
    assert layer.base_layer.weight_fp8.dtype == torch.float8_e4m3fn
    assert layer.lora_A[REFERENCE_ADAPTER].weight.dtype == torch.float32
    clip = _render(engine, tiny_plan(reference_count=2))
    assert clip.frames.shape == (24, 720, 1280, 3) and clip.frames.std() > 1


def test_an_adapter_that_does_not_fit_costs_only_reference_renders(
    tiny_engine_cache, adapters, tiny_plan
) -> None:
    wrong = adapters / "other-model.safetensors"
    save_file(
        {
            "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 999),
            "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(16, 4),
        },
        str(wrong),
    )
    engine = load_engine(EngineOptions("tiny", reference_adapter=str(wrong)), cache_dir=tiny_engine_cache)
    assert engine.render(tiny_plan(), None, None, _noop).frames.shape == (24, 720, 1280, 3)
    with pytest.raises(RuntimeError, match="does not load into this checkpoint"):
        _render(engine, tiny_plan(reference_count=2))
