"""Local file storage under the data directory. Writes land under a temporary name and are renamed
into place, so a reader never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from openreel.storage.base import LocalFile


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._inside = os.path.join(self._root, "")

    def _file(self, key: str) -> str:
        """The file behind a key; keys that would leave the root are refused. Worked out on the string
        (the keys are the server's own; no link in the data directory is followed to check them): every
        poll of a finished job asks whether its file still exists, and resolving the path through the
        file system took 7 % of such a poll's time (BENCHMARKS.md)."""
        file = os.path.normpath(os.path.join(self._inside, key))
        if file == self._root or not file.startswith(self._inside):
            raise ValueError(f"invalid storage key {key!r}")
        return file

    def path(self, key: str) -> Path:
        return Path(self._file(key))

    def staging_path(self, key: str) -> Path:
        """A fresh temporary path next to the key's final place (same filesystem, so rename is atomic)."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=".", suffix=".part")
        os.close(fd)
        return Path(name)

    def commit(self, staged: Path, key: str) -> None:
        os.replace(staged, self.path(key))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._file(key))

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def signed_url(self, key: str, ttl_s: int) -> str | None:
        return None

    def serve(
        self, key: str, media_type: str, *, redirect: bool, disposition: str | None = None
    ) -> LocalFile | None:
        try:
            path = self.path(key)
        except ValueError:
            return None
        return LocalFile(path) if path.is_file() else None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def remove_partials(self) -> int:
        """Delete files left half-written by a process that died mid-write (run at start-up)."""
        stale = list(self.root.rglob(".*.part"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
