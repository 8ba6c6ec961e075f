"""Every duration x aspect x resolution the contract allows, rendered by the tiny engine and muxed:
the MP4 has the exact pixel size, 24 fps, 24 frames a second and an audio track just as long."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import pytest

from openreel.engine.mux import probe_mp4, write_mp4

SIZES = {("720p", "16:9"): (1280, 720), ("720p", "9:16"): (720, 1280)}
SIZES |= {("1080p", "16:9"): (1920, 1080), ("1080p", "9:16"): (1080, 1920)}


@pytest.mark.parametrize(
    ("duration", "aspect", "resolution"), list(product((4, 6, 8), ("16:9", "9:16"), ("720p", "1080p")))
)
def test_every_combination_renders_exactly(
    tiny_engine, tiny_plan, tmp_path: Path, duration: int, aspect: str, resolution: str
) -> None:
    plan = tiny_plan(duration_s=duration, aspect_ratio=aspect, resolution=resolution)
    clip = tiny_engine.render(plan, None, None, lambda *_: None)
    out = tmp_path / "clip.mp4"
    write_mp4(clip, plan.fps, out, preset="ultrafast")
    info = probe_mp4(out)
    assert (info.width, info.height) == SIZES[resolution, aspect]
    assert (info.fps, info.frame_count) == (24, duration * 24)
    assert info.has_audio and info.audio_duration_s is not None
    assert abs(info.duration_s - duration) < 0.05 and abs(info.audio_duration_s - duration) < 0.05
