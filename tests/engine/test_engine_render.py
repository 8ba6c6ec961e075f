"""Rendering through the tiny random-weight LTX-2: exact output sizes, determinism, conditioning,
progress and cancellation. Renders are small (1 s, quarter grid) except the size checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from openreel.engine.base import Cancelled, Clip
from openreel.engine.ltx2 import LTX2Engine, conditioning_pixels, frames_to_output, guidance_kwargs
from openreel.engine.mux import probe_mp4, write_mp4
from openreel.engine.pipelines import Condition
from openreel.engine.recipes import recipe

# One worker runs this module, so its module-scoped fixtures start once.
pytestmark = pytest.mark.xdist_group("engine_render")


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
    # The tiny build is an LTX-2.0 architecture with dev weights (its scheduler shifts dynamically).
    assert (tiny_engine.version, tiny_engine.weights) == ("2.0", "dev")


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


def test_conditions_cover_and_crop_without_stretching(tiny_engine) -> None:
    # Square source whose red channel is x and green is y: after the pipeline's cover+crop to 320x192
    # the x ramp must keep its full span (scaled 0.8) and y must be the centre band: no axis squeezed.
    xs = np.broadcast_to(np.arange(400)[None, :], (400, 400))
    ys = xs.T
    src = np.stack([xs * 255 // 399, ys * 255 // 399, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    frames, *_ = tiny_engine.pipe.preprocess_conditions(
        [Condition(src, index=0, crf=0)], height=192, width=320, num_frames=25
    )
    out = ((frames[0][0, :, 0].permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert out.shape == (192, 320, 3)
    assert abs(out[96, 0, 0] - 0) <= 3 and abs(out[96, -1, 0] - 255) <= 3
    # Rows 64..255 of the 320x320 cover image = source rows 80..319.
    assert abs(out[0, 160, 1] - 80 * 255 // 399) <= 3
    assert abs(out[-1, 160, 1] - 319 * 255 // 399) <= 3


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


def test_guidance_kwargs_set_every_knob(tiny_engine) -> None:
    """diffusers defaults to audio CFG 7, STG 1 and modality 3: a stage passes all of them."""
    fast, refine = recipe("fast", "2.0").stages
    off = guidance_kwargs(fast)
    assert off["guidance_scale"] == off["audio_guidance_scale"] == 1.0
    assert (
        off["stg_scale"] == off["audio_stg_scale"] == 0.0 and off["spatio_temporal_guidance_blocks"] is None
    )
    assert off["modality_scale"] == off["audio_modality_scale"] == 1.0
    quality = guidance_kwargs(recipe("quality", "2.3").stages[0])
    assert (quality["guidance_scale"], quality["audio_guidance_scale"]) == (3.0, 7.0)
    assert quality["spatio_temporal_guidance_blocks"] == [28] and quality["modality_scale"] == 3.0
    assert guidance_kwargs(refine) == off


def test_on_step_reports_every_step(tiny_engine, tiny_plan) -> None:
    calls: list[tuple[int, int]] = []
    tiny_engine.render(tiny_plan(), None, None, lambda i, n: calls.append((i, n)))
    assert calls == [(i, 11) for i in range(1, 12)]


def test_cancel_stops_before_decoding(tiny_engine, tiny_plan, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def cancel(i: int, total: int) -> None:
        calls.append(i)
        raise Cancelled

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a cancelled render")

    with monkeypatch.context() as m:
        m.setattr(tiny_engine.pipe.vae, "decode", no_decode)
        with pytest.raises(Cancelled):
            tiny_engine.render(tiny_plan(), None, None, cancel)
    assert calls == [1]
    # The engine is usable again afterwards (lock released, scheduler reset by the next call).
    assert tiny_engine.render(tiny_plan(), None, None, _noop).frames.shape == (24, 720, 1280, 3)


def test_render_then_mux_end_to_end(full_clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    write_mp4(full_clip, 24, out, preset="ultrafast")
    info = probe_mp4(out)
    assert (info.width, info.height, info.frame_count, info.fps) == (1280, 720, 96, 24.0)
    assert info.has_audio and info.audio_duration_s == pytest.approx(4.0, abs=1e-3)


def _final_latents(engine: LTX2Engine, plan, first, last) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The latents the render decodes."""
    seen: list[torch.Tensor] = []
    decode = engine._decode_video

    def keep(latents: torch.Tensor) -> torch.Tensor:
        seen.append(latents.clone())
        return decode(latents)

    engine._decode_video = keep  # type: ignore[method-assign]
    try:
        engine.render(plan, first, last, _noop)
    finally:
        del engine._decode_video
    return seen[0]


@pytest.mark.parametrize("with_last", [False, True])
def test_first_latent_frame_is_the_image_alone(tiny_engine, tiny_plan, with_last: bool) -> None:
    """The first frame is pinned to the encoded image: its latent is the same whatever the seed and
    prompt, and changes with the image, while the frames after it are generated."""

    def first_latents(image: PIL.Image.Image, **changes: object) -> torch.Tensor:
        plan = tiny_plan(has_first_frame=True, has_last_frame=with_last, **changes)
        return _final_latents(tiny_engine, plan, image, _image(640, 360, 3) if with_last else None)

    a = first_latents(_image(640, 360, 1))
    b = first_latents(_image(640, 360, 1), seed=99, prompt="something else entirely")
    c = first_latents(_image(640, 360, 2))
    assert torch.equal(a[:, :, 0], b[:, :, 0]) and not torch.equal(a[:, :, 1], b[:, :, 1])
    assert not torch.equal(a[:, :, 0], c[:, :, 0])


def _round_trip(engine: LTX2Engine, image: PIL.Image.Image, plan) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The image through the conditioning's own steps and straight back, with no denoising: H.264 at the
    generation's CRF at its own size, the pipeline's cover-resize to the full grid, VAE-encoded (the
    latent's mode, as the pipeline takes it), decoded and cut to the output like a render."""
    pipe = engine.pipe
    pixels = conditioning_pixels(image, recipe(plan.recipe, engine.version).image_crf)
    frames, *_ = pipe.preprocess_conditions(
        [Condition(pixels, index=0, crf=0)], plan.gen_height, plan.gen_width, plan.gen_frames
    )
    with torch.inference_mode():
        latents = pipe.vae.encode(frames[0]).latent_dist.mode()
        decoded = pipe.vae.decode(latents, return_dict=False)[0]
    return frames_to_output(decoded[0], plan.width, plan.height)[0]


@pytest.mark.parametrize("with_last", [False, True])
def test_first_frame_is_the_vae_round_trip_of_the_image(tiny_engine, tiny_plan, with_last: bool) -> None:
    """Decoded and scaled to the output size, frame 0 is the image's VAE round trip at the full grid (the
    image is encoded again for stage 2, and the tiny decoder is causal, so frame 0 depends on the first
    latent alone); another image's render is far from it."""
    plan = tiny_plan(has_first_frame=True, has_last_frame=with_last, seed=11)
    last = _image(640, 360, 3) if with_last else None
    expected = _round_trip(tiny_engine, _image(640, 360, 1), plan).astype(int)
    clip = tiny_engine.render(plan, _image(640, 360, 1), last, _noop)
    assert np.abs(clip.frames[0].astype(int) - expected).max() <= 1
    other = tiny_engine.render(plan, _image(640, 360, 2), last, _noop)
    assert np.abs(other.frames[0].astype(int) - expected).mean() > 10
