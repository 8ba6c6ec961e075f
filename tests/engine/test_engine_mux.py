"""MP4 writing and probing: exact counts, optional audio, atomic writes."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest

from openreel.engine.base import Clip
from openreel.engine.mux import probe_mp4, write_mp4
from openreel.engine.part_files import encodes_under_way


def _frames(num: int = 96, width: int = 1280, height: int = 720) -> np.ndarray:
    """A moving gradient: cheap to encode, and decodable back to something checkable."""
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    base = ((x // 5 + y // 5) % 256).astype(np.uint8)[..., None]
    out = np.empty((num, height, width, 3), np.uint8)
    for i in range(num):
        out[i] = base + np.uint8(4 * i % 256)  # uint8 arithmetic wraps: the pattern scrolls
    return out


def _tone(seconds: float, rate: int, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((0.2 * np.sin(2 * np.pi * 440 * t))[None], channels, axis=0).astype(np.float32)


def _top_level_atoms(path: Path) -> list[str]:
    atoms, data, pos = [], path.read_bytes(), 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        atoms.append(kind.decode())
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        pos += size if size else len(data)
    return atoms


@pytest.fixture(scope="module")
def frames_720p() -> np.ndarray:
    return _frames()


def test_round_trip_with_audio(frames_720p: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "video.mp4"
    write_mp4(Clip(frames_720p, _tone(4.0, 16000), 16000), 24, out, preset="ultrafast")
    info = probe_mp4(out)
    assert (info.width, info.height, info.fps, info.frame_count) == (1280, 720, 24.0, 96)
    assert info.duration_s == pytest.approx(4.0)
    assert info.has_audio
    assert info.audio_duration_s == pytest.approx(4.0, abs=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]  # no temp file left
    atoms = _top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")  # +faststart
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
        audio = container.streams.audio[0].codec_context
        assert (audio.name, audio.sample_rate, audio.channels) == ("aac", 16000, 2)
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == info.frame_count
    assert np.abs(decoded[0].astype(int) - frames_720p[0].astype(int)).mean() < 8


def test_no_audio_stream_without_audio(tmp_path: Path) -> None:
    out = tmp_path / "silent.mp4"
    write_mp4(Clip(_frames(24, 320, 192), None, 16000), 24, out, preset="ultrafast")
    info = probe_mp4(out)
    assert (info.width, info.height, info.frame_count) == (320, 192, 24)
    assert not info.has_audio and info.audio_duration_s is None
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 0


def test_mono_48k_audio_keeps_its_length(tmp_path: Path) -> None:
    out = tmp_path / "mono.mp4"
    write_mp4(Clip(_frames(24, 320, 192), _tone(1.0, 48000, channels=1), 48000), 24, out, preset="ultrafast")
    info = probe_mp4(out)
    assert info.audio_duration_s == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    "clip",
    [
        Clip(np.zeros((24, 192, 320), np.uint8), None, 16000),  # no channel axis
        Clip(np.zeros((24, 192, 320, 3), np.float32), None, 16000),  # not uint8
        Clip(np.zeros((24, 191, 320, 3), np.uint8), None, 16000),  # odd side
        Clip(np.zeros((24, 192, 320, 3), np.uint8), np.zeros((16000,), np.float32), 16000),  # 1-D audio
    ],
)
def test_bad_clip_writes_nothing(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError):
        write_mp4(clip, 24, out, preset="ultrafast")
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_encode_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = av.VideoFrame.from_ndarray
    calls = {"n": 0}

    under_way: list[list[Path]] = []

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            under_way.append(encodes_under_way(out))  # what a worker killed now would leave
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", flaky)
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_mp4(Clip(_frames(24, 320, 192), None, 16000), 24, out, preset="ultrafast")
    assert list(tmp_path.iterdir()) == [] and encodes_under_way(out) == []
    assert len(under_way[0]) == 1 and under_way[0][0].parent == tmp_path  # found while it was written

    # An existing file at the target survives a failed overwrite untouched.
    out.write_bytes(b"previous")
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        write_mp4(Clip(_frames(24, 320, 192), None, 16000), 24, out, preset="ultrafast")
    assert out.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [out]


def test_unknown_encoder_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    clip = Clip(frames=_frames(4, 64, 64), audio=None, sample_rate=24_000)
    with pytest.raises(ValueError, match="encoder must be one of"):
        write_mp4(clip, 24, tmp_path / "clip.mp4", preset="ultrafast", codec="mpeg4")
    assert list(tmp_path.iterdir()) == []
