"""Seconds to write an MP4 (H.264 + AAC) of 4 and 8 s at 720p and 1080p, per encoder setting.

The frames are a moving gradient with a little grain: as compressible as a generated clip, unlike noise,
which no encoder compresses. x264 runs on the CPU (its threads take every core); NVENC on the GPU's video
engine, where FFmpeg finds one (a setting whose encoder is missing prints why, and the rest go on).

    python bench/mux.py
    python bench/mux.py --settings libx264:ultrafast,h264_nvenc:p1 --sizes 1080p:8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from openreel.engine.base import Clip
from openreel.engine.mux import probe_mp4, write_mp4
from openreel.engine.plan import FPS, output_size

SAMPLE_RATE = 24_000  # LTX-2's vocoder rate
DEFAULT_SETTINGS = "libx264:ultrafast,libx264:veryfast,h264_nvenc:p1,h264_nvenc:p4"


def frames(width: int, height: int, count: int, seed: int = 0) -> np.ndarray:
    """A diagonal gradient sliding a few pixels a frame, with grain."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    grain = np.random.default_rng(seed).normal(0, 4, (height, width, 1)).astype(np.float32)
    out = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        base = (x + y + 6 * i) % 512 / 2
        rgb = np.stack([base, (base + 85) % 256, 255 - base], axis=-1) + grain
        out[i] = np.clip(rgb, 0, 255)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="CODEC:PRESET,...")
    parser.add_argument("--sizes", default="720p:4,720p:8,1080p:4,1080p:8", help="RESOLUTION:SECONDS,...")
    parser.add_argument("--json", type=Path, help="append each row here as a JSON line")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores")
    print(f"{'encoder':>12} {'preset':>10} {'output':>10} {'frames':>7} {'seconds':>8} {'MB':>7}", flush=True)
    for size in args.sizes.split(","):
        resolution, duration = size.split(":")
        width, height = output_size(resolution, "16:9")
        count = int(duration) * FPS
        wave = np.sin(np.linspace(0, 440 * 2 * np.pi * int(duration), int(duration) * SAMPLE_RATE))
        clip = Clip(
            frames=frames(width, height, count),
            audio=np.stack([wave, wave]).astype(np.float32) * 0.3,
            sample_rate=SAMPLE_RATE,
        )
        for setting in args.settings.split(","):
            codec, preset = setting.split(":")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "clip.mp4"
                begin = time.perf_counter()
                try:
                    write_mp4(clip, FPS, path, codec=codec, preset=preset)
                except Exception as exc:  # an encoder this FFmpeg or this machine lacks
                    print(f"{codec:>12} {preset:>10} unavailable: {type(exc).__name__}: {exc}", flush=True)
                    continue
                seconds = time.perf_counter() - begin
                info = probe_mp4(path)
                assert info.frame_count == count, (info.frame_count, count)
                size_mb = path.stat().st_size / 1e6
            output = f"{width}x{height}"
            print(
                f"{codec:>12} {preset:>10} {output:>10} {count:>7} {seconds:>8.2f} {size_mb:>7.1f}",
                flush=True,
            )
            if args.json:
                with args.json.open("a") as f:
                    row = {
                        "codec": codec,
                        "preset": preset,
                        "resolution": resolution,
                        "seconds": int(duration),
                    }
                    f.write(
                        json.dumps({**row, "encode_s": round(seconds, 3), "mb": round(size_mb, 2)}) + "\n"
                    )


if __name__ == "__main__":
    main()
