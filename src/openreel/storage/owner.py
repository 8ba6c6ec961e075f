"""Which server owns a data directory: the one holding the lock on its ``server.lock``, which names the URL
it answers on. The owner alone removes the half-written files a crash left there (another server's may
be under way), and ``openreel generate`` without a server sends its job to the owner rather than start a
second service on the same queue. The kernel releases the lock of a process that died, even by SIGKILL."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

LOCK_FILE = "server.lock"


class Ownership:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def take(self, url: str) -> bool:
        """True: this process owns the directory now, until ``release``; False: another server does."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "url": url}).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # and the lock with it
            self._fd = None


def owner_url(data_dir: Path) -> str | None:
    """The URL of the server that owns ``data_dir`` now, if one does."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return str(json.loads(os.read(fd, 4096))["url"])
        except (ValueError, KeyError, TypeError):  # being written: as good as no owner yet
            return None
    else:
        return None
    finally:
        os.close(fd)
