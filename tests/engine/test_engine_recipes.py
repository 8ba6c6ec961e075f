"""The recipes on the tiny engine, which has the real layout (dev weights, distilled LoRA, upsampler):
two stages for every id, each stage on its own weights, guidance and sigmas, conditions encoded again
at each stage's size, the last frame on the output's last frame, and the trace that says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch

from openreel.engine import TINY_CHECKPOINT_DIR, EngineOptions, load_engine
from openreel.engine.base import Cancelled
from openreel.engine.ltx2 import LTX2Engine
from openreel.engine.recipes import DISTILLED_SIGMAS, REFINE_SIGMAS, ltx2_scheduler_sigmas
from openreel.engine.tiny import TINY_DISTILLED_LORA


def _noop(i: int, total: int) -> None:
    pass


def _image(color: tuple[int, int, int]) -> PIL.Image.Image:
    return PIL.Image.new("RGB", (640, 360), color)


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(v, 6) for v in values]


def test_fast_720p_is_two_unguided_distilled_stages(tiny_engine, tiny_plan) -> None:
    upsamples: list[int] = []
    hook = tiny_engine.upsampler.latent_upsampler.register_forward_pre_hook(lambda *_: upsamples.append(1))
    try:
        clip = tiny_engine.render(tiny_plan(), None, None, _noop)
    finally:
        hook.remove()
    first, second = clip.recipe["stages"]
    assert (first["width"], first["height"], second["width"], second["height"]) == (160, 96, 320, 192)
    assert first["frames"] == second["frames"] == 25 and upsamples == [1]
    assert first["sigmas"] == _rounded(DISTILLED_SIGMAS) and first["noiseScale"] == 1.0
    assert second["sigmas"] == _rounded(REFINE_SIGMAS) and second["noiseScale"] == REFINE_SIGMAS[0]
    for stage in (first, second):
        assert stage["guidance"] == [] and stage["passesPerStep"] == 1
        assert stage["weights"] == "distilled" and stage["lora"] is True
    assert clip.recipe["version"] == "2.0" and clip.recipe["precision"] == "fp32"  # float32 on a CPU
    assert clip.recipe["conditions"] == [] and clip.recipe["peakGpuBytes"] is None
    assert clip.frames.shape == (24, 720, 1280, 3)


def test_quality_guides_stage_one_on_dev_weights_only(stg_engine, tiny_plan) -> None:
    """LTX-2.0's TI2VidTwoStagesPipeline: 40 LTX2Scheduler steps with CFG, STG and modality guidance
    (4 transformer rows a step), then the distilled refine, unguided."""
    batches: list[int] = []
    hook = stg_engine.pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: batches.append(kw["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        clip = stg_engine.render(tiny_plan(recipe="quality"), None, None, _noop)
    finally:
        hook.remove()
    first, second = clip.recipe["stages"]
    assert first["guidance"] == ["cfg", "stg", "modality"] and first["passesPerStep"] == 4
    assert first["weights"] == "dev" and first["lora"] is False
    assert first["sigmas"] == _rounded(ltx2_scheduler_sigmas(40))
    assert second["guidance"] == [] and second["passesPerStep"] == 1 and second["lora"] is True
    # CFG runs as one batch-2 call, STG and modality as one call each; the refine as single calls.
    assert batches == [2, 1, 1] * 40 + [1] * 3


def test_stg_perturbs_its_block_on_the_ltx_2_0_architecture(stg_engine) -> None:
    """diffusers builds LTX-2.0 blocks without the STG perturbation (perturbed_attn off); the engine wires
    it into block 29, so the STG pass differs from the conditional one, as upstream's does."""
    transformer = stg_engine.pipe.transformer
    assert transformer.transformer_blocks[29].perturbed_attn
    assert not transformer.transformer_blocks[28].perturbed_attn
    gen = torch.Generator().manual_seed(0)
    kwargs = {
        "hidden_states": torch.randn(1, 60, 4, generator=gen),
        "audio_hidden_states": torch.randn(1, 26, 4, generator=gen),
        "encoder_hidden_states": torch.randn(1, 16, 32, generator=gen),
        "audio_encoder_hidden_states": torch.randn(1, 16, 32, generator=gen),
        "timestep": torch.full((1, 60), 500.0),
        "audio_timestep": torch.tensor([500.0]),
        "sigma": torch.tensor([500.0]),
        "num_frames": 4,
        "height": 3,
        "width": 5,
        "fps": 24.0,
        "audio_num_frames": 26,
        "return_dict": False,
    }
    with torch.inference_mode():
        plain = transformer(**kwargs)[0]
        perturbed = transformer(**kwargs, spatio_temporal_guidance_blocks=[29])[0]
        elsewhere = transformer(**kwargs, spatio_temporal_guidance_blocks=[28])[0]
    assert not torch.equal(plain, perturbed)
    assert torch.equal(plain, elsewhere)  # a block without the perturbation wired computes as usual


def test_conditions_are_encoded_whole_and_only_the_decode_is_tiled(tiny_engine, tiny_plan) -> None:
    vae = tiny_engine.pipe.vae
    seen: list[tuple[str, bool]] = []
    hooks = [
        vae.encoder.register_forward_pre_hook(lambda *_: seen.append(("encode", vae.use_tiling))),
        vae.decoder.register_forward_pre_hook(lambda *_: seen.append(("decode", vae.use_tiling))),
    ]
    try:
        tiny_engine.render(tiny_plan(has_first_frame=True), _image((200, 100, 50)), None, _noop)
    finally:
        for hook in hooks:
            hook.remove()
    assert ("encode", False) in seen and ("encode", True) not in seen
    assert ("decode", True) in seen and not vae.use_tiling


def test_keyframes_are_encoded_at_each_stage_and_the_last_sits_on_the_last_output_frame(
    tiny_engine, tiny_plan
) -> None:
    plan = tiny_plan(duration_s=4, resolution="1080p", has_first_frame=True, has_last_frame=True)
    clip = tiny_engine.render(plan, _image((220, 40, 40)), _image((40, 40, 220)), _noop)
    sizes = [(s["width"], s["height"]) for s in clip.recipe["stages"]]
    # 1920x1080 on the quarter grid: 480x270 rounded up to /64, stage 1 at half that.
    assert sizes == [plan.stage_size(True), plan.stage_size(False)] == [(256, 160), (512, 320)]
    expected = [
        {"kind": kind, "stage": stage, "width": w, "height": h, "pixelFrame": frame, "frames": 1}
        for stage, (w, h) in enumerate(sizes)
        for kind, frame in (("image", 0), ("last_frame", 95))
    ]
    assert clip.recipe["conditions"] == expected
    assert clip.frames.shape == (96, 1080, 1920, 3)


@pytest.mark.parametrize("duration", [4, 6, 8])
def test_the_last_frame_keyframe_is_timed_at_output_frame_n_minus_1(tiny_engine, tiny_plan, duration) -> None:
    """Read from the keyframe tokens' time coordinates: [n-1, n) / 24 s, where n = 24 * duration (the
    grid has n + 1 frames; upstream's latent index -1 would put it at n - 8)."""
    from openreel.engine.pipelines import Condition

    plan = tiny_plan(duration_s=duration, has_last_frame=True)
    pipe = tiny_engine.pipe
    condition = Condition(
        np.zeros((96, 160, 3), np.uint8), index=-1, crf=0, pixel_frame=plan.last_frame_index
    )
    *_, coords = pipe.prepare_latents(
        conditions=[condition],
        num_channels_latents=4,
        height=96,
        width=160,
        num_frames=plan.gen_frames,
        frame_rate=24.0,
        dtype=torch.float32,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    starts = set((coords[0, 0, :, 0] * 24).round().tolist())
    ends = set((coords[0, 0, :, 1] * 24).round().tolist())
    assert starts == {24 * duration - 1} and ends == {24 * duration}


def test_a_negative_prompt_on_a_fast_id_steers_through_nag_in_one_pass(tiny_engine, tiny_plan) -> None:
    plain = tiny_engine.render(tiny_plan(), None, None, _noop)
    blurry = tiny_engine.render(tiny_plan(negative_prompt="blurry"), None, None, _noop)
    grainy = tiny_engine.render(tiny_plan(negative_prompt="grainy"), None, None, _noop)
    first, second = blurry.recipe["stages"]
    assert first["guidance"] == ["nag"] and first["passesPerStep"] == 1
    assert second["guidance"] == [] and second["passesPerStep"] == 1
    assert not np.array_equal(blurry.frames, plain.frames)
    assert not np.array_equal(blurry.frames, grainy.frames)
    assert blurry.audio is not None and plain.audio is not None
    assert not np.array_equal(blurry.audio, plain.audio)
    # Nothing of the negative prompt lingers: the next plain render is the same as the first.
    assert np.array_equal(tiny_engine.render(tiny_plan(), None, None, _noop).frames, plain.frames)


def test_a_quality_negative_prompt_acts_through_cfg(tiny_engine, tiny_plan) -> None:
    a = tiny_engine.render(tiny_plan(recipe="quality", negative_prompt="blurry"), None, None, _noop)
    b = tiny_engine.render(tiny_plan(recipe="quality", negative_prompt="grainy"), None, None, _noop)
    # Two blocks: no STG block to perturb (the 30-block engine's guidance is checked above).
    assert a.recipe["stages"][0]["guidance"] == ["cfg", "modality"]
    assert not np.array_equal(a.frames, b.frames)


def test_the_distilled_lora_is_fused_and_taken_out_exactly(tiny_engine, tiny_plan) -> None:
    layer = tiny_engine.pipe.transformer.transformer_blocks[0].attn1.to_q
    tiny_engine.lora.restore()
    dev = layer.weight.detach().clone()
    fast = tiny_engine.render(tiny_plan(), None, None, _noop)
    fused = layer.weight.detach().clone()
    assert tiny_engine.lora.fused and not torch.equal(fused, dev)
    tiny_engine.render(tiny_plan(recipe="quality"), None, None, _noop)
    tiny_engine.lora.restore()
    assert torch.equal(layer.weight, dev)
    for _ in range(3):
        tiny_engine.lora.fuse()
        tiny_engine.lora.restore()
    assert torch.equal(layer.weight, dev)
    assert np.array_equal(tiny_engine.render(tiny_plan(), None, None, _noop).frames, fast.frames)


def test_progress_runs_over_both_stages_and_cancel_reaches_the_refine(tiny_engine, tiny_plan) -> None:
    steps: list[tuple[int, int]] = []
    tiny_engine.render(tiny_plan(), None, None, lambda i, n: steps.append((i, n)))
    assert steps == [(i, 11) for i in range(1, 12)]

    def stop_in_stage_two(step: int, total: int) -> None:
        if step > 8:
            raise Cancelled()

    with pytest.raises(Cancelled):
        tiny_engine.render(tiny_plan(negative_prompt="blurry"), None, None, stop_in_stage_two)
    assert tiny_engine.nag.negative is None and tiny_engine.nag.split is None


def _variant(source: Path, target: Path, *, distilled: bool, lora: bool, upsampler: bool) -> Path:
    """The tiny checkpoint in another layout: distilled weights (a scheduler that neither shifts nor
    stretches), or without its LoRA or upsampler."""
    shutil.copytree(source, target)
    if distilled:
        config = target / "scheduler" / "scheduler_config.json"
        values = json.loads(config.read_text())
        values.update(use_dynamic_shifting=False, shift_terminal=None)
        config.write_text(json.dumps(values))
    if not lora:
        (target / TINY_DISTILLED_LORA).unlink()
    if not upsampler:
        shutil.rmtree(target / "latent_upsampler")
    return target


def _load(directory: Path, **parts: Any) -> LTX2Engine:
    from openreel.engine import find_parts

    return LTX2Engine.from_pretrained(
        directory,
        name="tiny",
        grid_scale=0.25,
        random_weights=True,
        parts=find_parts(EngineOptions("tiny", **parts), directory),
    )


def test_a_distilled_checkpoint_serves_the_fast_recipe_natively(
    tiny_engine, tiny_engine_cache, tiny_plan, tmp_path
) -> None:
    source = tiny_engine_cache / TINY_CHECKPOINT_DIR
    engine = _load(_variant(source, tmp_path / "distilled", distilled=True, lora=True, upsampler=True))
    assert engine.weights == "distilled" and engine.lora is None
    assert engine.unavailable("fast") is None
    assert "dev weights" in (engine.unavailable("quality") or "")
    clip = engine.render(tiny_plan(), None, None, _noop)
    assert [s["lora"] for s in clip.recipe["stages"]] == [False, False]
    with pytest.raises(RuntimeError, match="dev weights"):
        engine.render(tiny_plan(recipe="quality"), None, None, _noop)


def test_missing_pieces_make_their_recipes_unavailable(
    tiny_engine, tiny_engine_cache, tiny_plan, tmp_path
) -> None:
    source = tiny_engine_cache / TINY_CHECKPOINT_DIR
    no_lora = _load(_variant(source, tmp_path / "no-lora", distilled=False, lora=False, upsampler=True))
    for kind in ("fast", "quality"):
        reason = no_lora.unavailable(kind) or ""
        assert "distilled LoRA" in reason and "openreel models pull" in reason
    with pytest.raises(RuntimeError, match="distilled LoRA"):
        no_lora.render(tiny_plan(), None, None, _noop)
    no_upsampler = _load(_variant(source, tmp_path / "no-up", distilled=False, lora=True, upsampler=False))
    assert "upsampler" in (no_upsampler.unavailable("fast") or "")
    # Pieces published apart from the checkpoint, named by the settings.
    separate = _load(
        tmp_path / "no-up",
        distilled_lora=str(source / TINY_DISTILLED_LORA),
        upsampler=str(source / "latent_upsampler"),
    )
    assert separate.unavailable("fast") is None and separate.unavailable("quality") is None
    assert np.array_equal(
        separate.render(tiny_plan(), None, None, _noop).frames,
        tiny_engine.render(tiny_plan(), None, None, _noop).frames,
    )


def test_load_engine_reports_what_each_recipe_needs(tiny_engine_cache) -> None:
    engine = load_engine(EngineOptions("tiny"), cache_dir=tiny_engine_cache)
    assert engine.unavailable("fast") is None and engine.unavailable("quality") is None
