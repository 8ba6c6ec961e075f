"""Which servers run on a data directory. The owner holds the lock on its ``server.lock``, which names the
URL it answers on: ``openreel generate`` without a server sends its job there rather than start a second
service on the same queue. Every server holds a shared lock on ``servers.lock`` while it runs: the owner,
starting while no other runs, removes the half-written files a crash left (another server's may be
under way, even where the owner restarted beside a second server; one of a release before this lock
holds only ``server.lock``). The kernel releases the locks of a process that died, even by SIGKILL."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

LOCK_FILE = "server.lock"
PRESENCE_FILE = "servers.lock"
# ``owner_url`` holds the lock for a moment to test it: a server starting then tries a few times.
TRIES, TRY_EVERY_S = 5, 0.02


class Ownership:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / LOCK_FILE
        self._presence_path = data_dir / PRESENCE_FILE
        self._fd: int | None = None
        self._presence: int | None = None

    def take(self, url: str | None) -> bool:
        """True: this process owns the directory now, until ``release``; False: another server does.
        ``url`` None: an owner that takes no jobs from others (``openreel generate``'s own server)."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == TRIES - 1:
                    os.close(fd)
                    return False
                time.sleep(TRY_EVERY_S)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "url": url}).encode())
        self._fd = fd
        return True

    def arrive(self, sweep: Callable[[], object] | None) -> bool:
        """Count this server among those running on the directory, until ``release``. Where none runs,
        ``sweep`` first, the lock held exclusively: every half-written file is then one a dead process
        left, and no server starting meanwhile writes a new one before it is done. False: others run
        (or ``sweep`` is None), and their files are left be."""
        fd = os.open(self._presence_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._presence = fd
        if sweep is None:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a sweep under way
            return False
        try:
            sweep()
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # and the lock with it
            self._fd = None
        if self._presence is not None:
            os.close(self._presence)
            self._presence = None


def owner_url(data_dir: Path) -> str | None:
    """The URL of the server that owns ``data_dir`` now, if one does and takes others' jobs."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            url = json.loads(os.read(fd, 4096))["url"]
        except (ValueError, KeyError, TypeError):  # being written: as good as no owner yet
            return None
        return url if isinstance(url, str) else None
    else:
        return None
    finally:
        os.close(fd)
