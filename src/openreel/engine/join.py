"""An extension joined to the clip it continues: one MP4, the clip's frames and then the new ones.

The new segment was rendered with the clip's last ``LEAD_FRAMES`` pinned at its start (plan.py), so its
first new frame follows the clip's last one. The diffusers pipelines keep one timestep for all audio
tokens, so the clip's sound cannot be pinned the same way; instead the segment's own sound over the lead
(made with the lead's frames, in sync with them) is cross-faded in over the last ``JOIN_FADE_S`` before
the join, at equal power, and carries on after it. The clip's frames are decoded and encoded again,
streamed, never all in memory.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from openreel.engine.base import Clip
from openreel.engine.mux import write_mp4

# openreel's choice, long enough not to click, short enough that the two takes are not heard together.
JOIN_FADE_S = 0.5


def frames_of(mp4: bytes) -> Iterator[np.ndarray]:
    """Every frame of the clip, uint8 (height, width, 3), one at a time."""
    with av.open(io.BytesIO(mp4), mode="r") as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def frame_count(mp4: bytes) -> int:
    """The clip's frames, counted as its packets (one per frame in MP4), without decoding them."""
    with av.open(io.BytesIO(mp4), mode="r") as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


def last_frames(mp4: bytes, count: int) -> np.ndarray:
    """The clip's last ``count`` frames, uint8 (count, height, width, 3): decoded from the keyframe
    before them, not from the start of a long clip."""
    total = frame_count(mp4)
    with av.open(io.BytesIO(mp4), mode="r") as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if rate and stream.time_base and total > count:
            start = (total - count) / rate
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        tail = deque((f.to_ndarray(format="rgb24") for f in container.decode(stream)), maxlen=count)
    if len(tail) < count:
        raise ValueError(f"the clip to extend has {len(tail)} frames; its last {count} are needed")
    return np.stack(tail)


def sound_of(mp4: bytes, rate: int, channels: int) -> np.ndarray | None:
    """The clip's sound as float32 (channels, samples) at ``rate``; None: it has none."""
    with av.open(io.BytesIO(mp4), mode="r") as container:
        if not container.streams.audio:
            return None
        layout = "mono" if channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = [
            out.to_ndarray() for frame in container.decode(audio=0) for out in resampler.resample(frame)
        ]
        chunks += [out.to_ndarray() for out in resampler.resample(None)]
    return (
        np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((channels, 0), np.float32)
    )


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
    if after is not None:
        segment[:, : after.shape[1]] = after[:, : lead + added]
    fade = min(round(JOIN_FADE_S * rate), lead, join)
    x = (np.arange(fade, dtype=np.float32) + 0.5) / fade
    out_gain, in_gain = np.cos(np.pi / 2 * x), np.sin(np.pi / 2 * x)
    head[:, join - fade :] = head[:, join - fade :] * out_gain + segment[:, lead - fade : lead] * in_gain
    return np.concatenate([head, segment[:, lead:]], axis=1)


def write_joined_mp4(mp4: bytes, clip: Clip, *, lead_frames: int, fps: int, path: Path, preset: str) -> None:
    """The clip in ``mp4`` followed by ``clip`` (the extension's new frames), as one MP4 at ``path``."""
    before_frames = frame_count(mp4)
    channels = clip.audio.shape[0] if clip.audio is not None else 2
    sound = joined_sound(
        sound_of(mp4, clip.sample_rate, channels),
        clip.audio,
        rate=clip.sample_rate,
        channels=channels,
        before_frames=before_frames,
        lead_frames=lead_frames,
        added_frames=len(clip.frames),
        fps=fps,
    )
    write_mp4(clip, fps, path, preset=preset, before=frames_of(mp4), audio=sound)
