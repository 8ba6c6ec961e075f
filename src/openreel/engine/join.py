"""An extension joined to the clip it continues: one MP4, the clip's frames and then the new ones.

The new segment was rendered from the clip's last ``LEAD_FRAMES`` and their sound, both pinned at its
start (plan.py, lead.py), so its first new frame and its sound carry on from the clip's. The clip's own
sound is kept up to the join and cross-faded, at equal power, into the segment's over the last
``JOIN_FADE_S`` before it: over the lead the segment's sound is the clip's, through the audio VAE, so
the switch is not heard. The clip's frames are decoded and encoded again, streamed, never all in memory.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from openreel.engine.base import Clip, Lead
from openreel.engine.mux import write_mp4

# openreel's choice: long enough that the switch from the clip's sound to the segment's does not click.
JOIN_FADE_S = 0.5


def frames_of(mp4: bytes) -> Iterator[np.ndarray]:
    """Every frame of the clip, uint8 (height, width, 3), one at a time."""
    with av.open(io.BytesIO(mp4), mode="r") as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


@dataclass(frozen=True)
class Source:
    """The clip an extension continues, read once for all the task's samples: its MP4, its frames counted
    as the container's packets (one per frame in MP4, no decoding), and its sound (None: silent)."""

    mp4: bytes
    frames: int
    sound: np.ndarray | None
    sample_rate: int


def read_source(mp4: bytes) -> Source:
    """One pass over the container: the video's packets counted, the sound decoded."""
    with av.open(io.BytesIO(mp4), mode="r") as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        frames, chunks = 0, []
        for packet in container.demux(*container.streams.video[:1], *([audio] if audio else [])):
            if packet.stream.type == "video":
                frames += bool(packet.size)
            elif audio is not None:
                chunks += [frame.to_ndarray() for frame in audio.decode(packet)]
        rate = audio.codec_context.sample_rate if audio else 0
    sound = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else None
    return Source(mp4, frames, sound, rate)


def last_frames(source: Source, count: int) -> np.ndarray:
    """The clip's last ``count`` frames, uint8 (count, height, width, 3): decoded from the keyframe
    before them, not from the start of a long clip."""
    with av.open(io.BytesIO(source.mp4), mode="r") as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if rate and stream.time_base and source.frames > count:
            start = (source.frames - count) / rate
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        tail = deque((f.to_ndarray(format="rgb24") for f in container.decode(stream)), maxlen=count)
    if len(tail) < count:
        raise ValueError(f"the clip to extend has {len(tail)} frames; its last {count} are needed")
    return np.stack(tail)


def resampled(wave: np.ndarray, rate: int, to_rate: int, channels: int) -> np.ndarray:
    """``wave`` (channels, samples) at ``rate`` as float32 (``channels``, samples) at ``to_rate``: mono
    copied to both sides or stereo averaged to one here, at the same level, then FFmpeg's resampler."""
    if len(wave) != channels:
        wave = np.repeat(wave, channels, axis=0) if len(wave) == 1 else wave.mean(axis=0, keepdims=True)
    layout = {1: "mono", 2: "stereo"}[channels]
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(wave, dtype=np.float32), format="fltp", layout=layout
    )
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=to_rate)
    chunks = [out.to_ndarray() for out in resampler.resample(frame)]
    chunks += [out.to_ndarray() for out in resampler.resample(None)]
    return (
        np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((channels, 0), np.float32)
    )


def lead_of(source: Source, frames: int, fps: int) -> Lead:
    """The clip's last ``frames`` frames, and its sound over them."""
    pictures = last_frames(source, frames)
    if source.sound is None:
        return Lead(pictures, None, 0)
    rate = source.sample_rate
    end = round(source.frames * rate / fps)
    return Lead(pictures, source.sound[:, max(0, end - round(frames * rate / fps)) : end], rate)


def joined_sound(
    before: np.ndarray | None,
    after: np.ndarray | None,
    *,
    rate: int,
    channels: int,
    before_frames: int,
    lead_frames: int,
    added_frames: int,
    fps: int,
) -> np.ndarray | None:
    """The whole sound: the clip's up to the fade, the two cross-faded, then the segment's after its lead.

    ``before`` is the clip's sound and ``after`` the segment's (its lead's and then its own), both at
    ``rate`` with ``channels``; a side without sound is silence. None when neither has any.
    """
    if before is None and after is None:
        return None
    join = round(before_frames * rate / fps)
    lead = round(lead_frames * rate / fps)
    added = round(added_frames * rate / fps)
    head = np.zeros((channels, join), np.float32)
    if before is not None:
        kept = min(join, before.shape[1])
        head[:, :kept] = before[:, :kept]
    segment = np.zeros((channels, lead + added), np.float32)
    if after is not None:  # a silent extension leaves the clip's sound as it was: no fade
        segment[:, : after.shape[1]] = after[:, : lead + added]
        fade = min(round(JOIN_FADE_S * rate), lead, join)
        in_gain = np.sin(np.pi / 2 * (np.arange(fade, dtype=np.float32) + 0.5) / fade) ** 2
        head[:, join - fade :] = (
            head[:, join - fade :] * (1 - in_gain) + segment[:, lead - fade : lead] * in_gain
        )
    return np.concatenate([head, segment[:, lead:]], axis=1)


def write_joined_mp4(
    source: Source, clip: Clip, *, lead_frames: int, fps: int, path: Path, preset: str
) -> None:
    """The clip ``source`` followed by ``clip`` (the extension's new frames), as one MP4 at ``path``."""
    channels = clip.audio.shape[0] if clip.audio is not None else 2
    before = source.sound
    sound = joined_sound(
        None if before is None else resampled(before, source.sample_rate, clip.sample_rate, channels),
        clip.audio,
        rate=clip.sample_rate,
        channels=channels,
        before_frames=source.frames,
        lead_frames=lead_frames,
        added_frames=len(clip.frames),
        fps=fps,
    )
    write_mp4(clip, fps, path, preset=preset, before=frames_of(source.mp4), audio=sound)
