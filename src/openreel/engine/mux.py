"""H.264 + AAC MP4 writing and probing with PyAV (its wheel bundles FFmpeg with libx264 and native AAC).

Own muxer rather than ``diffusers.utils.encode_video``: that one uses libx264's default (slow)
preset with no options and does no trimming; here the frame and sample counts are exactly the
clip's, the moov atom goes first (``+faststart``) so players can start before the download ends,
and a file appears at its final path only when it is complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path

import av
import numpy as np

from openreel.engine.base import Clip
from openreel.engine.part_files import encoding_file

# H.264 encoders: FFmpeg's x264 (CPU) and NVIDIA's NVENC (the GPU's video engine; presets p1 fastest to p7).
ENCODERS = ("libx264", "h264_nvenc")
AAC_FRAME = 1024  # samples per AAC frame: feed the encoder exactly this much each time
AUDIO_BITRATE = 128_000
_LAYOUTS = {1: "mono", 2: "stereo"}


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    has_audio: bool
    audio_duration_s: float | None


def _check(clip: Clip) -> None:
    """Reject a bad clip before any file is touched; yuv420p needs even sides."""
    f = clip.frames
    if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] == 0:
        raise ValueError(f"frames must be uint8 (frames, height, width, 3), got {f.dtype} {f.shape}")
    if f.shape[1] % 2 or f.shape[2] % 2:
        raise ValueError(f"frame sides must be even for yuv420p, got {f.shape[2]}x{f.shape[1]}")
    a = clip.audio
    if a is not None and (a.ndim != 2 or a.shape[0] not in _LAYOUTS or a.shape[1] == 0):
        raise ValueError(f"audio must be (1 or 2 channels, samples), got {a.shape}")
    if a is not None and clip.sample_rate <= 0:
        raise ValueError(f"bad sample rate {clip.sample_rate}")


def _encoder_options(codec: str, preset: str, crf: int) -> dict[str, object]:
    """The same constant-quality target in each encoder's terms: x264's CRF, NVENC's variable bitrate
    held at a constant quality level (``cq``, on the same 0-51 scale)."""
    if codec == "libx264":
        return {"preset": preset, "crf": str(crf)}
    if codec == "h264_nvenc":
        return {"preset": preset, "rc": "vbr", "cq": str(crf), "b": "0"}
    raise ValueError(f"encoder must be one of {ENCODERS}, got {codec!r}")


def _encode(
    frames: Iterable[np.ndarray],
    size: tuple[int, int],
    audio: np.ndarray | None,
    sample_rate: int,
    fps: int,
    target: Path,
    options: tuple[str, str, int],
) -> None:
    codec, preset, crf = options
    with av.open(str(target), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream(codec, rate=fps)
        assert isinstance(video, av.VideoStream)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.time_base = Fraction(1, fps)
        video.options = _encoder_options(codec, preset, crf)
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = _LAYOUTS[audio.shape[0]]
            audio_stream.bit_rate = AUDIO_BITRATE
            audio_stream.time_base = Fraction(1, sample_rate)

        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())

        if audio_stream is not None and audio is not None:
            wave = np.ascontiguousarray(audio, dtype=np.float32)
            layout = _LAYOUTS[wave.shape[0]]
            for start in range(0, wave.shape[1], AAC_FRAME):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[:, start : start + AAC_FRAME]), format="fltp", layout=layout
                )
                chunk.sample_rate = sample_rate
                chunk.pts = start
                container.mux(audio_stream.encode(chunk))
            container.mux(audio_stream.encode())


# Lightricks' encoder default (ltx_pipelines/utils/media_io/encode.py encode_video, after 1.0.0, which
# left libx264's 23): visibly cleaner on LTX-2's fine texture for a modestly larger file.
CRF = 19


def write_mp4(
    clip: Clip,
    fps: int,
    path: Path,
    *,
    preset: str,
    codec: str = "libx264",
    crf: int = CRF,
    before: Iterable[np.ndarray] = (),
    audio: np.ndarray | None = None,
) -> None:
    """Write ``clip`` as H.264 (yuv420p) + AAC MP4 at ``path``, atomically.

    Encodes into a hidden sibling and ``os.replace``s it over ``path``; on any error the sibling is
    removed, so ``path`` is either absent, untouched, or complete. No audio stream when clip.audio is None.
    A join (``join.py``) puts the frames of the clip it continues ``before`` the clip's, streamed, and
    gives the whole sound as ``audio``.
    """
    _check(clip)
    path = Path(path)
    tmp = encoding_file(path)
    size = (clip.frames.shape[2], clip.frames.shape[1])
    sound = clip.audio if audio is None else audio
    try:
        _encode(chain(before, clip.frames), size, sound, clip.sample_rate, fps, tmp, (codec, preset, crf))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def probe_mp4(path: Path) -> MediaInfo:
    """Counts measured from the file, not taken from its headers: the video's frames as the packets
    the container holds (one per frame in MP4; decoding them all would cost more than the encode of a
    small clip), the audio's samples decoded."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        rate = video.average_rate or video.guessed_rate
        fps = float(rate) if rate else 0.0
        frame_count = sum(1 for packet in container.demux(video) if packet.size)
    audio_duration: float | None = None
    with av.open(str(path)) as container:
        has_audio = bool(container.streams.audio)
        if has_audio:
            audio = container.streams.audio[0]
            decoded = sum(f.samples for f in container.decode(audio=0)) / audio.codec_context.sample_rate
            # The decoder keeps the padding of the last AAC frame (up to 1023 samples); the edit list
            # in the header has the true length. Take that, but never more than what decodes.
            time_base = audio.time_base
            declared = float(audio.duration * time_base) if audio.duration and time_base else decoded
            audio_duration = min(declared, decoded)
    return MediaInfo(
        width=width,
        height=height,
        fps=fps,
        frame_count=frame_count,
        duration_s=frame_count / fps if fps else 0.0,
        has_audio=has_audio,
        audio_duration_s=audio_duration,
    )
