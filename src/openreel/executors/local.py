"""A handle on one spawned worker process (one per GPU on a real box)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from openreel.executors import messages as m
from openreel.executors.worker import run_worker
from openreel.settings import Settings


class LocalWorker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ctx = mp.get_context("spawn")
        self._cancel = self._ctx.Value("q", -1)
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None

    def start(self) -> None:
        parent, child = self._ctx.Pipe()
        s = self._settings
        self._process = self._ctx.Process(
            target=run_worker,
            args=(s.engine, str(s.data_dir / "models"), s.checkpoint, s.x264_preset, child, self._cancel),
            name="openreel-worker",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._conn = parent

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def poll(self, timeout: float) -> m.Event | None:
        """The next event, or None; a closed pipe (dead worker) also yields None."""
        if self._conn is None:
            return None
        try:
            if self._conn.poll(timeout):
                return self._conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            pass
        return None

    def send(self, task: m.RenderTask) -> None:
        assert self._conn is not None
        self._conn.send(task)

    def cancel(self, seq: int) -> None:
        self._cancel.value = seq

    def stop(self, timeout: float = 5.0) -> None:
        if self._process is None:
            return
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        self._process.join(timeout)
        self.kill()

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
