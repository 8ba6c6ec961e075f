"""Where an MP4 is encoded before it is renamed into place: a hidden sibling of its path, which a worker
killed mid-encode leaves behind. Apart from mux.py, so the server that clears them needs no PyAV."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def encoding_file(path: Path) -> Path:
    """A fresh hidden sibling of ``path`` to encode into."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(name)


def encodes_under_way(path: Path) -> list[Path]:
    """The siblings ``encoding_file`` made for ``path`` that are still there."""
    return list(path.parent.glob(f".{path.name}.*.part"))
