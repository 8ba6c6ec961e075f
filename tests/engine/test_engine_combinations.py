"""Each output size and each duration the contract allows, rendered by the tiny engine and muxed: the MP4
has the exact pixel size, 24 fps, 24 frames a second and an audio track just as long.

Every duration x aspect x resolution is planned in test_planning.py (sizes, frame counts, grids); here each
of the four sizes is rendered at the shortest duration and each duration at the smallest size, which
exercises every crop and every trim without twelve full-length renders and encodes."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import pytest

from openreel.engine.mux import probe_mp4, write_mp4

SIZES = {("720p", "16:9"): (1280, 720), ("720p", "9:16"): (720, 1280)}
SIZES |= {("1080p", "16:9"): (1920, 1080), ("1080p", "9:16"): (1080, 1920)}


SIZES_AT_4S = [(4, aspect, resolution) for aspect, resolution in product(("16:9", "9:16"), ("720p", "1080p"))]
DURATIONS_AT_720P = [(duration, "16:9", "720p") for duration in (6, 8)]


@pytest.mark.parametrize(("duration", "aspect", "resolution"), SIZES_AT_4S + DURATIONS_AT_720P)
def test_each_size_and_duration_renders_exactly(
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
