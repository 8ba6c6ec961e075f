"""A render actor's scratch folder on its node, and the sweep of those left by actors that died.

A Ray actor killed mid-render (a job's timeout, a cancel that went unheard) never runs its ``finally``:
its half-written clips would stay in the node's temporary folder for good. Each actor holds an
exclusive lock on a file in its folder for as long as it lives (the kernel drops it when the process
dies, even by SIGKILL); a new actor removes every folder whose lock it can take.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("openreel.executor")

PREFIX = "openreel-ray-"
LOCK = ".lock"


class Scratch:
    """This actor's folder in ``base`` (the system's temporary folder), made once the dead actors' are
    swept, and locked before it takes the name a sweep looks for. Never removed by its actor, which Ray
    ends by killing it: the next actor on the node sweeps it."""

    def __init__(self, base: Path | None = None) -> None:
        base = Path(base or tempfile.gettempdir())
        _sweep(base)
        making = Path(tempfile.mkdtemp(prefix=f".{PREFIX}", dir=base))
        self._fd = os.open(making / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.path = base / making.name.removeprefix(".")
        making.rename(self.path)


def _sweep(base: Path) -> None:
    for folder in base.glob(f"{PREFIX}*"):
        try:
            fd = os.open(folder / LOCK, os.O_RDONLY)
        except OSError:  # not one of ours, or already gone
            continue
        try:
            with contextlib.suppress(BlockingIOError):  # its actor is alive
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                log.info("removing %s, left by a render actor that died", folder)
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
