"""The worker process: loads the engine once, then renders tasks one at a time.

Started with ``spawn`` (CUDA and forked children do not mix). Cancellation arrives through a shared
integer holding the sequence number of the task to abandon, checked after every denoising step.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

from openreel.executors import messages as m

STEPS_SHARE = 90
PR_SET_PDEATHSIG = 1


def _progress(events: Connection, seq: int, percent: int, last: list[int]) -> None:
    if percent > last[0]:
        last[0] = percent
        events.send(m.Progress(seq, percent))


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when the server dies, even by SIGKILL, so an orphan
    never keeps rendering (and writing) for a server that is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_worker(
    engine_name: str,
    cache_dir: str,
    checkpoint: str | None,
    x264_preset: str,
    conn: Connection,
    cancel_seq: Synchronized,  # type: ignore[type-arg]
) -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from openreel.engine import load_engine
    from openreel.engine.base import Cancelled
    from openreel.engine.mux import probe_mp4, write_mp4

    _die_with_parent()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        engine = load_engine(engine_name, cache_dir=Path(cache_dir), checkpoint=checkpoint)
    except Exception as exc:
        conn.send(m.EngineFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(m.EngineReady(engine.name, engine.grid_scale, engine.random_weights))

    while True:
        try:
            task: m.RenderTask | None = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        last = [-1]

        def on_step(step: int, total: int, task: m.RenderTask = task, last: list[int] = last) -> None:
            if cancel_seq.value == task.seq:
                raise Cancelled()
            _progress(conn, task.seq, step * STEPS_SHARE // max(total, 1), last)

        try:
            clip = engine.render(task.plan, task.first_frame, task.last_frame, on_step)
            if cancel_seq.value == task.seq:
                raise Cancelled()
            _progress(conn, task.seq, 95, last)
            write_mp4(clip, task.plan.fps, Path(task.output_path), preset=x264_preset)
            info = probe_mp4(Path(task.output_path))
            conn.send(
                m.Done(
                    task.seq,
                    {
                        "width": info.width,
                        "height": info.height,
                        "fps": task.plan.fps,
                        "frameCount": info.frame_count,
                        "durationSeconds": round(info.duration_s, 3),
                        "hasAudio": info.has_audio,
                    },
                )
            )
        except Cancelled:
            Path(task.output_path).unlink(missing_ok=True)
            conn.send(m.Cancelled(task.seq))
        except Exception as exc:
            Path(task.output_path).unlink(missing_ok=True)
            traceback.print_exc()
            conn.send(m.Failed(task.seq, f"generation failed: {type(exc).__name__}: {exc}"))
