"""Rendering through the tiny random-weight LTX-2: exact output sizes, determinism, routing, guidance,
progress and cancellation. Renders are small (1 s, quarter grid, 2 steps) except the size checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf, resolve_default_image_crf

from openreel.engine.base import Cancelled, Clip
from openreel.engine.ltx2 import LTX2Engine, fit_image, frames_to_output, guidance_kwargs
from openreel.engine.mux import probe_mp4, write_mp4


def _noop(i: int, total: int) -> None:
    pass


def _image(width: int, height: int, seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _same(a: Clip, b: Clip) -> bool:
    audio_same = (a.audio is None and b.audio is None) or (
        a.audio is not None and b.audio is not None and np.array_equal(a.audio, b.audio)
    )
    return np.array_equal(a.frames, b.frames) and audio_same


@pytest.fixture(scope="module")
def base_clip(tiny_engine, tiny_plan) -> Clip:
    return tiny_engine.render(tiny_plan(), None, None, _noop)


@pytest.fixture(scope="module")
def full_clip(tiny_engine, tiny_plan) -> Clip:
    """4 s of 1280x720 with audio: the contract's real output size."""
    return tiny_engine.render(tiny_plan(duration_s=4), None, None, _noop)


def test_engine_identity(tiny_engine) -> None:
    assert tiny_engine.name == "tiny"
    assert tiny_engine.grid_scale == 0.25
    assert tiny_engine.random_weights is True
    assert tiny_engine.sample_rate == 16000


def test_exact_shape_16x9_with_audio(full_clip: Clip) -> None:
    assert full_clip.frames.shape == (96, 720, 1280, 3)
    assert full_clip.frames.dtype == np.uint8
    assert full_clip.sample_rate == 16000
    assert full_clip.audio is not None
    assert full_clip.audio.dtype == np.float32
    assert full_clip.audio.shape == (2, 4 * 16000)
    assert full_clip.frames[::8, ::8, ::8].std() > 1  # decoded noise, not a blank canvas
    assert np.abs(full_clip.audio).max() > 0


def test_exact_shape_9x16_without_audio(tiny_engine, tiny_plan) -> None:
    plan = tiny_plan(duration_s=4, aspect_ratio="9:16", generate_audio=False)
    assert (plan.gen_width, plan.gen_height) == (192, 320)
    clip = tiny_engine.render(plan, None, None, _noop)
    assert clip.frames.shape == (96, 1280, 720, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.audio is None


def test_dropping_audio_keeps_the_video(tiny_engine, tiny_plan, base_clip: Clip) -> None:
    clip = tiny_engine.render(tiny_plan(generate_audio=False), None, None, _noop)
    assert clip.audio is None
    assert np.array_equal(clip.frames, base_clip.frames)
    assert base_clip.audio is not None and base_clip.audio.shape == (2, 16000)


def test_same_seed_is_bit_identical(tiny_engine, tiny_plan, base_clip: Clip) -> None:
    again = tiny_engine.render(tiny_plan(), None, None, _noop)
    assert _same(again, base_clip)


@pytest.mark.parametrize("change", [{"seed": 8}, {"prompt": "a blue whale singing in the deep"}])
def test_seed_and_prompt_change_the_output(tiny_engine, tiny_plan, base_clip: Clip, change: dict) -> None:
    other = tiny_engine.render(tiny_plan(**change), None, None, _noop)
    assert not np.array_equal(other.frames, base_clip.frames)
    assert other.audio is not None and base_clip.audio is not None
    assert not np.array_equal(other.audio, base_clip.audio)


def test_fit_image_covers_and_crops_without_stretching() -> None:
    # Square source whose red channel is x and green is y: after cover+crop to 320x192 the x ramp must
    # keep its full span (scaled 0.8) and y must be the centre band, i.e. no axis was squeezed.
    xs = np.broadcast_to(np.arange(400)[None, :], (400, 400))
    ys = xs.T
    src = np.stack([xs * 255 // 399, ys * 255 // 399, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    out = np.asarray(fit_image(PIL.Image.fromarray(src).convert("RGBA"), 320, 192))
    assert out.shape == (192, 320, 3)
    assert abs(int(out[96, 0, 0]) - 0) <= 3 and abs(int(out[96, -1, 0]) - 255) <= 3
    # Rows 64..255 of the 320x320 cover image = source rows 80..319.
    assert abs(int(out[0, 160, 1]) - 80 * 255 // 399) <= 3
    assert abs(int(out[-1, 160, 1]) - 319 * 255 // 399) <= 3


def test_first_frame_changes_the_output(tiny_engine, tiny_plan, base_clip: Clip) -> None:
    plan = tiny_plan(has_first_frame=True)
    first = tiny_engine.render(plan, _image(640, 360, 1), None, _noop)
    assert first.frames.shape == base_clip.frames.shape
    assert not np.array_equal(first.frames, base_clip.frames)
    other = tiny_engine.render(plan, _image(500, 500, 2), None, _noop)
    assert not np.array_equal(first.frames, other.frames)


def test_last_frame_and_first_plus_last(tiny_engine, tiny_plan, base_clip: Clip) -> None:
    last_only = tiny_engine.render(tiny_plan(has_last_frame=True), None, _image(640, 360, 3), _noop)
    assert last_only.frames.shape == base_clip.frames.shape
    assert not np.array_equal(last_only.frames, base_clip.frames)
    both = tiny_engine.render(
        tiny_plan(has_first_frame=True, has_last_frame=True), _image(640, 360, 1), _image(640, 360, 3), _noop
    )
    assert both.audio is not None and both.audio.shape == (2, 16000)
    assert not np.array_equal(both.frames, last_only.frames)


def test_plan_flags_must_match_images(tiny_engine, tiny_plan) -> None:
    with pytest.raises(ValueError, match="keyframe flags"):
        tiny_engine.render(tiny_plan(), _image(64, 64, 0), None, _noop)


def test_last_frame_keyframe_sits_on_the_final_pixel_frame(tiny_engine) -> None:
    """Upstream maps latent index -1 to pixel frame num_frames - 8; ours must be num_frames - 1."""
    from diffusers import LTX2ConditionPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    upstream = LTX2ConditionPipeline(**{k: v for k, v in tiny_engine.t2v.components.items() if v is not None})
    conditions = [
        LTX2VideoCondition(frames=_image(320, 192, 1), index=0),
        LTX2VideoCondition(frames=_image(320, 192, 3), index=-1),
    ]
    starts = {}
    for label, pipe in (("ours", tiny_engine.keyframes), ("upstream", upstream)):
        *_, coords = pipe.prepare_latents(
            conditions=conditions,
            batch_size=1,
            num_channels_latents=4,
            height=192,
            width=320,
            num_frames=97,
            frame_rate=24.0,
            noise_scale=1.0,
            dtype=torch.float32,
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(0),
        )
        starts[label] = set((coords[0, 0, :, 0] * 24).round().tolist())
        ends = set((coords[0, 0, :, 1] * 24).round().tolist())
        assert ends == {s + 1 for s in starts[label]}  # a single pixel frame wide
    assert starts == {"ours": {96.0}, "upstream": {89.0}}


def _render_counting_passes(engine: LTX2Engine, plan) -> tuple[Clip, list[int]]:
    """Render and return the batch size of every transformer call made along the way."""
    batches: list[int] = []
    hook = engine.t2v.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: batches.append(kw["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        clip = engine.render(plan, None, None, _noop)
    finally:
        hook.remove()
    return clip, batches


def test_distilled_run_turns_every_guidance_off(tiny_engine, tiny_plan) -> None:
    """guidance <= 1: one batch-1 transformer pass per step, and the negative prompt is ignored."""
    a, b = tiny_plan(negative_prompt="blurry"), tiny_plan(negative_prompt="grainy")
    assert a.guidance_scale == 1.0
    clip, batches = _render_counting_passes(tiny_engine, a)
    assert batches == [1, 1]
    assert _same(clip, tiny_engine.render(b, None, None, _noop))
    kwargs = guidance_kwargs(1.0)
    assert kwargs["stg_scale"] == 0 and kwargs["modality_scale"] == 1 and kwargs["audio_guidance_scale"] == 1


def test_negative_prompt_acts_with_guidance(tiny_engine, tiny_plan) -> None:
    """guidance > 1: CFG only (one batch-2 pass per step, no STG/modality passes); negatives matter."""
    a = tiny_plan(negative_prompt="blurry", guidance_scale=3.0)
    b = tiny_plan(negative_prompt="grainy", guidance_scale=3.0)
    clip, batches = _render_counting_passes(tiny_engine, a)
    assert batches == [2, 2]
    other = tiny_engine.render(b, None, None, _noop)
    assert not np.array_equal(clip.frames, other.frames)
    assert clip.audio is not None and other.audio is not None
    assert not np.array_equal(clip.audio, other.audio)


def test_on_step_reports_every_step(tiny_engine, tiny_plan) -> None:
    calls: list[tuple[int, int]] = []
    tiny_engine.render(tiny_plan(steps=3), None, None, lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_cancel_stops_before_decoding(tiny_engine, tiny_plan, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def cancel(i: int, total: int) -> None:
        calls.append(i)
        raise Cancelled

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a cancelled render")

    with monkeypatch.context() as m:
        m.setattr(tiny_engine.t2v.vae, "decode", no_decode)
        with pytest.raises(Cancelled):
            tiny_engine.render(tiny_plan(steps=3), None, None, cancel)
    assert calls == [1]
    # The engine is usable again afterwards (lock released, scheduler reset by the next call).
    assert tiny_engine.render(tiny_plan(), None, None, _noop).frames.shape == (24, 720, 1280, 3)


def test_render_then_mux_end_to_end(full_clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    write_mp4(full_clip, 24, out)
    info = probe_mp4(out)
    assert (info.width, info.height, info.frame_count, info.fps) == (1280, 720, 96, 24.0)
    assert info.has_audio and info.audio_duration_s == pytest.approx(4.0, abs=1e-3)


@pytest.mark.parametrize("with_last", [False, True])
def test_first_latent_frame_is_the_image_alone(tiny_engine, tiny_plan, with_last: bool) -> None:
    """The first frame is pinned to the encoded image: its latent is the same whatever the seed and
    prompt, and changes with the image, while the frames after it are generated."""

    def first_latents(image: PIL.Image.Image, **changes: object) -> torch.Tensor:
        plan = tiny_plan(has_first_frame=True, has_last_frame=with_last, **changes)
        last = _image(640, 360, 3) if with_last else None
        size = (plan.gen_width, plan.gen_height)
        generator = torch.Generator().manual_seed(plan.seed)
        with torch.inference_mode():
            out = tiny_engine._denoise(
                plan,
                image,
                last,
                size,
                {"num_inference_steps": 2},
                generator,
                _noop,
                0,
                2,
                output_type="latent",
            )
        return out.frames

    a = first_latents(_image(640, 360, 1))
    b = first_latents(_image(640, 360, 1), seed=99, prompt="something else entirely")
    c = first_latents(_image(640, 360, 2))
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and not torch.equal(a[:, :, 1], b[:, :, 1])
    assert not torch.equal(a[:, :, 0], c[:, :, 0])


def _round_trip(engine: LTX2Engine, image: PIL.Image.Image, width: int, height: int) -> np.ndarray:
    """The image through the first-frame pipeline's own steps and straight back, with no denoising:
    fitted to the grid, re-encoded as H.264 at the pipeline's CRF, preprocessed, VAE-encoded (the
    latent's mode, as the pipeline takes it) and decoded."""
    pipe = engine.i2v
    fitted = np.asarray(fit_image(image, width, height))
    crf_image = PIL.Image.fromarray(
        apply_image_conditioning_crf(fitted, resolve_default_image_crf(pipe.text_encoder))
    )
    pixels = pipe.video_processor.preprocess(crf_image, height, width).unsqueeze(2)
    with torch.inference_mode():
        latents = pipe.vae.encode(pixels).latent_dist.mode()
        decoded = pipe.vae.decode(latents, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(decoded, output_type="np")[0]


@pytest.mark.parametrize("with_last", [False, True])
def test_first_frame_is_the_vae_round_trip_of_the_image(tiny_engine, tiny_plan, with_last: bool) -> None:
    """Decoded and scaled to the output size, frame 0 is the image's VAE round trip (the tiny decoder
    is causal, so frame 0 depends on the first latent alone); another image's render is far from it."""
    plan = tiny_plan(has_first_frame=True, has_last_frame=with_last, seed=11)
    last = _image(640, 360, 3) if with_last else None
    trip = _round_trip(tiny_engine, _image(640, 360, 1), plan.gen_width, plan.gen_height)
    expected = frames_to_output(trip, plan.width, plan.height)[0].astype(int)
    clip = tiny_engine.render(plan, _image(640, 360, 1), last, _noop)
    assert np.abs(clip.frames[0].astype(int) - expected).max() <= 1
    other = tiny_engine.render(plan, _image(640, 360, 2), last, _noop)
    assert np.abs(other.frames[0].astype(int) - expected).mean() > 10
