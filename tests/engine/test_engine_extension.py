"""Extension on the tiny engine and the join: the clip's last frames pinned at the start of the render,
the trace that says which frames conditioned what, and the MP4 that joins the two with a cross-fade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from openreel.engine.base import Clip, Lead
from openreel.engine.join import (
    JOIN_FADE_S,
    joined_sound,
    last_frames,
    read_source,
    resampled,
    write_joined_mp4,
)
from openreel.engine.lead import AudioLead
from openreel.engine.ltx2 import frames_to_output, lead_on_grid
from openreel.engine.mux import probe_mp4, write_mp4
from openreel.engine.pipelines import Condition
from openreel.engine.plan import LEAD_FRAMES


def _noop(i: int, total: int) -> None:
    pass


def _coordinates(width: int, height: int) -> np.ndarray:
    """A frame whose red and green say where each pixel is."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 / (width - 1), y * 255 / (height - 1), np.full_like(x, 128.0)], -1).astype(
        np.uint8
    )


def _lead(rate: int = 44_100) -> Lead:
    """57 frames of the output's size, and 57 / 24 s of a 330 Hz tone at a rate the audio VAE does not use."""
    frames = np.broadcast_to(_coordinates(1280, 720), (LEAD_FRAMES, 720, 1280, 3))
    t = np.arange(round(LEAD_FRAMES / 24 * rate)) / rate
    return Lead(frames, np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2).astype(np.float32), rate)


def test_the_lead_is_pinned_clean_through_every_call_and_the_output_follows_it(
    tiny_engine, tiny_plan
) -> None:
    plan = tiny_plan(lead_frames=LEAD_FRAMES)  # 57 + 24 = 81 frames, 11 latent frames
    assert plan.gen_frames == 81
    lead = _lead()
    given: list[torch.Tensor] = []  # what the transformer is given for the sound's first tokens
    hook = tiny_engine.pipe.transformer.register_forward_hook(
        lambda module, args, kwargs, out: given.append(kwargs["audio_hidden_states"][:, :59].clone()),
        with_kwargs=True,
    )
    try:
        with tiny_engine.recording() as traces:
            clip = tiny_engine.render(plan, None, None, _noop, lead=lead)
    finally:
        hook.remove()
    assert clip.frames.shape == (24, 720, 1280, 3)
    assert clip.audio is not None and clip.audio.shape[1] == round(81 / 24 * clip.sample_rate)
    # The trace: the 57 frames at pixel frame 0 of each stage, and 59 tokens of sound (25 a second, those
    # wholly inside 57 / 24 s).
    extend = [
        {"kind": "extend_audio", "stage": i, "width": 0, "height": 0, "pixelFrame": 0, "frames": 59}
        for i in range(2)
    ] + [
        {
            "kind": "extend",
            "stage": i,
            "width": s["width"],
            "height": s["height"],
            "pixelFrame": 0,
            "frames": 57,
        }
        for i, s in enumerate(clip.recipe["stages"])
    ]
    conditions = clip.recipe["conditions"]
    assert sorted(conditions, key=lambda c: (c["kind"], c["stage"])) == sorted(
        extend, key=lambda c: (c["kind"], c["stage"])
    )
    # The lead's 8 latent frames ((57 - 1) / 8 + 1) and 59 sound tokens never move: timestep 0 in every
    # call of every stage, while every other token is at the step's sigma.
    lead_latents = (LEAD_FRAMES - 1) // 8 + 1
    calls = traces[0].calls
    assert calls
    for call in calls:
        frames, height, width = call.grid
        assert call.timesteps is not None and call.audio_timesteps is not None
        per_frame = call.timesteps[: frames * height * width].reshape(frames, height * width)
        assert bool((per_frame[:lead_latents] == 0).all())
        assert _at(per_frame[lead_latents:], float(call.sigma))
        assert bool((call.audio_timesteps[:59] == 0).all())
        assert _at(call.audio_timesteps[59:], float(call.sigma))
    # ... and those tokens are the clip's own sound, encoded, in every row of every call.
    with torch.inference_mode():
        own = AudioLead(tiny_engine.pipe, lead.audio, lead.sample_rate, LEAD_FRAMES / 24, "cpu").clean[0]
    assert len(given) == len(calls)
    assert all(torch.allclose(rows, own.expand_as(rows)) for rows in given)


@pytest.mark.parametrize("aspect_ratio", ["16:9", "9:16"])
def test_the_lead_reaches_the_grid_where_the_output_takes_it_back(
    tiny_engine, tiny_plan, aspect_ratio
) -> None:
    """The pipelines scale a condition to cover the grid (1280x768 for 720p) and the output is the grid's
    middle 720 rows: padded to the grid's aspect first, the lead comes back pixel for pixel, where given
    as it is it would come back zoomed in by 768 / 720 (up to 40 px off at the edges)."""
    plan = tiny_plan(lead_frames=LEAD_FRAMES, aspect_ratio=aspect_ratio)
    frame = _coordinates(plan.width, plan.height)
    errors = []
    for frames in (lead_on_grid(frame[None], plan), frame[None]):
        pixels, *_ = tiny_engine.pipe.preprocess_conditions(
            [Condition(frames, index=0, crf=0)],
            plan.gen_height,
            plan.gen_width,
            plan.gen_frames,
            torch.device("cpu"),
        )
        back = frames_to_output(pixels[0][0].float(), plan.width, plan.height)[0]
        errors.append(int(np.abs(back.astype(int) - frame.astype(int)).max()))
    assert errors[0] <= 1 < 8 <= errors[1]


def test_an_extension_s_prompt_is_enhanced_reading_the_clip_s_last_frame(
    tiny_engine, tiny_plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(
        tiny_engine.enhancer,
        "rewrite",
        lambda prompt, seed, image: seen.append(image) or f"{prompt}, enhanced",
    )
    lead = _lead()
    clip = tiny_engine.render(
        tiny_plan(lead_frames=LEAD_FRAMES, enhance_prompt=True), None, None, _noop, lead=lead
    )
    assert clip.prompt == "a red fox running through fresh snow, enhanced"
    assert np.array_equal(np.asarray(seen[0]), lead.frames[-1])


def test_a_lead_not_of_the_output_s_size_is_refused(tiny_engine, tiny_plan) -> None:
    lead = _lead()
    small = Lead(lead.frames[:, :180, :320], lead.audio, lead.sample_rate)
    with pytest.raises(ValueError, match="1280x720"):
        tiny_engine.render(tiny_plan(lead_frames=LEAD_FRAMES), None, None, _noop, lead=small)


def _at(values: Any, sigma: float) -> bool:
    return bool(((values - sigma).abs() < 1e-4).all())


def test_a_plan_without_its_lead_is_refused(tiny_engine, tiny_plan) -> None:
    with pytest.raises(ValueError, match="lead_frames"):
        tiny_engine.render(tiny_plan(lead_frames=LEAD_FRAMES), None, None, _noop)
    with pytest.raises(ValueError, match="lead_frames"):
        tiny_engine.render(tiny_plan(), None, None, _noop, lead=_lead())


def test_the_sound_is_the_clip_s_then_cross_faded_then_the_extension_s() -> None:
    rate, fps = 1000, 25  # 40 samples a frame
    before = np.full((2, 4000), 0.5, np.float32)  # 100 frames
    after = np.full((2, 1000 + 2000), -0.25, np.float32)  # 25 lead frames, then 50 new ones
    sound = joined_sound(
        before, after, rate=rate, channels=2, before_frames=100, lead_frames=25, added_frames=50, fps=fps
    )
    assert sound is not None and sound.shape == (2, 4000 + 2000)
    fade = int(JOIN_FADE_S * rate)
    assert np.all(sound[:, : 4000 - fade] == 0.5)  # untouched before the fade
    assert np.all(sound[:, 4000:] == -0.25)  # the extension's own after the join
    mixed = sound[0, 4000 - fade : 4000]
    # Raised cosine: the two gains sum to one, so one sound on both sides (the clip's, and the clip's
    # through the audio VAE) keeps its level through the fade.
    gain = np.sin(np.pi / 2 * (np.arange(fade) + 0.5) / fade) ** 2
    assert np.allclose(mixed, 0.5 * (1 - gain) - 0.25 * gain, atol=1e-6)
    same = joined_sound(
        before,
        before[:, 3000:],
        rate=rate,
        channels=2,
        before_frames=100,
        lead_frames=25,
        added_frames=0,
        fps=fps,
    )
    assert same is not None and np.allclose(same, 0.5, atol=1e-6)
    silent = joined_sound(
        None, None, rate=rate, channels=2, before_frames=1, lead_frames=1, added_frames=1, fps=1
    )
    assert silent is None


def test_a_silent_side_is_silence_in_the_joined_sound() -> None:
    after = np.ones((1, 300), np.float32)
    sound = joined_sound(
        None, after, rate=100, channels=1, before_frames=10, lead_frames=1, added_frames=2, fps=1
    )
    assert sound is not None and sound.shape == (1, 1200)
    assert np.all(sound[:, : 1000 - 50] == 0) and np.all(sound[:, 1000:] == 1)
    # A silent extension of a clip with sound leaves the clip's sound whole, to its last sample.
    kept = joined_sound(
        after, None, rate=100, channels=1, before_frames=3, lead_frames=1, added_frames=2, fps=1
    )
    assert kept is not None and np.all(kept[:, :300] == 1) and np.all(kept[:, 300:] == 0)


def test_mono_and_stereo_meet_at_the_same_level() -> None:
    tone = 0.5 * np.sin(np.arange(4800) * 2 * np.pi * 440 / 48_000).astype(np.float32)
    stereo = resampled(tone[None], 48_000, 16_000, 2)
    mono = resampled(np.stack([tone, tone]), 48_000, 16_000, 1)
    for wave in (stereo[0], stereo[1], mono[0]):
        assert abs(np.abs(wave[200:-200]).max() - 0.5) < 0.02


def test_the_joined_mp4_holds_the_clip_then_the_new_frames(tmp_path: Path) -> None:
    rate = 16_000
    levels = np.linspace(20, 230, 72).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (72, 64, 96, 3)).copy()
    tone = 0.2 * np.sin(np.arange(3 * rate) * 2 * np.pi * 440 / rate).astype(np.float32)
    source = tmp_path / "source.mp4"
    write_mp4(Clip(frames, np.stack([tone, tone]), rate), 24, source, preset="ultrafast")
    mp4 = read_source(source.read_bytes())
    assert (mp4.frames, mp4.sample_rate, mp4.sound is not None) == (72, rate, True)
    tail = last_frames(mp4, LEAD_FRAMES)
    assert tail.shape == (LEAD_FRAMES, 64, 96, 3)
    assert np.abs(tail[:, 0, 0, 0].astype(int) - levels[-LEAD_FRAMES:]).max() <= 3

    new = np.full((48, 64, 96, 3), 128, np.uint8)
    lead_and_new = np.zeros((2, round((LEAD_FRAMES + 48) / 24 * rate)), np.float32)
    out = tmp_path / "joined.mp4"
    write_joined_mp4(
        mp4, Clip(new, lead_and_new, rate), lead_frames=LEAD_FRAMES, fps=24, path=out, preset="ultrafast"
    )
    info = probe_mp4(out)
    assert (info.frame_count, info.width, info.height, info.has_audio) == (120, 96, 64, True)
    assert info.audio_duration_s == pytest.approx(5.0, abs=0.01)
