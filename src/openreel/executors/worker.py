"""The worker process: loads the engine once, then renders tasks one at a time.

Started with ``spawn`` (CUDA and forked children do not mix). Cancellation arrives through a shared
integer holding the sequence number of the task to abandon, checked after every denoising step.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path

from openreel.engine import EngineOptions, load_engine
from openreel.executors import messages as m
from openreel.executors.render import render_task

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when the server dies, even by SIGKILL, so an orphan
    never keeps rendering (and writing) for a server that is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _report(conn: Connection, seq: int, percent: int) -> None:
    conn.send(m.Progress(seq, percent))


def _is_cancelled(cancel_seq: ctypes.c_longlong, seq: int) -> bool:
    return bool(cancel_seq.value == seq)


def run_worker(
    options: EngineOptions,
    cache_dir: str,
    x264_preset: str,
    device: str | None,
    conn: Connection,
    cancel_seq: ctypes.c_longlong,
) -> None:
    _die_with_parent()
    if device is not None:
        # Before torch loads: this process sees only its own GPU, as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = device

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        engine = load_engine(options, cache_dir=Path(cache_dir))
    except Exception as exc:
        conn.send(m.EngineFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(m.EngineReady.of(engine))

    while True:
        try:
            task: m.RenderTask | None = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        outcome = render_task(
            engine,
            task,
            [Path(path) for path in task.output_paths],
            x264_preset=x264_preset,
            report=partial(_report, conn, task.seq),
            cancelled=partial(_is_cancelled, cancel_seq, task.seq),
        )
        conn.send(outcome)
