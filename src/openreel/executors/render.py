"""One render task on a loaded engine: the part every kind of worker shares.

Progress runs 0 to 90 over the denoising steps, 95 while encoding; cancellation is checked after every
step and before encoding. No half-written MP4 survives a failure or a cancel.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from openreel.executors import messages as m

if TYPE_CHECKING:
    from openreel.engine.base import VideoEngine

STEPS_SHARE = 90
ENCODING = 95


def render_task(
    engine: VideoEngine,
    task: m.RenderTask,
    output: Path,
    *,
    x264_preset: str,
    report: Callable[[int], None],
    cancelled: Callable[[], bool],
) -> m.Outcome:
    from openreel.engine.base import Cancelled
    from openreel.engine.mux import probe_mp4, write_mp4

    last = -1

    def progress(percent: int) -> None:
        nonlocal last
        if percent > last:
            last = percent
            report(percent)

    def on_step(step: int, total: int) -> None:
        if cancelled():
            raise Cancelled()
        progress(step * STEPS_SHARE // max(total, 1))

    try:
        started = time.perf_counter()
        clip = engine.render(
            task.plan, task.first_frame, task.last_frame, on_step, references=task.references
        )
        if cancelled():
            raise Cancelled()
        progress(ENCODING)
        rendered = time.perf_counter()
        write_mp4(clip, task.plan.fps, output, preset=x264_preset)
        seconds = {"render": rendered - started, "encode": time.perf_counter() - rendered}
        info = probe_mp4(output)
    except Cancelled:
        output.unlink(missing_ok=True)
        return m.Cancelled(task.seq)
    except Exception as exc:
        output.unlink(missing_ok=True)
        traceback.print_exc()
        return m.Failed(task.seq, f"generation failed: {type(exc).__name__}: {exc}")
    enhanced = {"enhancedPrompt": clip.prompt} if clip.prompt is not None else {}
    return m.Done(
        task.seq,
        {
            **enhanced,
            "width": info.width,
            "height": info.height,
            "fps": task.plan.fps,
            "frameCount": info.frame_count,
            "durationSeconds": round(info.duration_s, 3),
            "hasAudio": info.has_audio,
            "recipe": clip.recipe,
        },
        seconds,
    )
