"""The storage interface: where uploads and results live, whatever the backend.

Writers produce files locally (a worker renders into a staging path, an upload is spooled to one)
and ``commit`` moves them into place atomically; readers get where the bytes are (``serve``: a local
file, a link of the backend's own, or a stream), which the protocols turn into their HTTP response,
or, where the backend can sign its own links (S3), a URL to hand out directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class StorageUnavailable(OSError):
    """The store could not be read for a reason of its own (out of reach, S3's 503 SlowDown, expired
    credentials): the object may well be there, and a later try may read it."""


@dataclass(frozen=True)
class LocalFile:
    """On this machine's disk: sent from there (HTTP Range included)."""

    path: Path


@dataclass(frozen=True)
class Redirect:
    """At a link the backend signed itself, which answers with the given type and disposition."""

    url: str


@dataclass(frozen=True)
class Stream:
    """Read from the backend chunk by chunk."""

    chunks: Iterator[bytes]
    length: int


Served = LocalFile | Redirect | Stream


class Storage(Protocol):
    def staging_path(self, key: str) -> Path:
        """A fresh local file to write the object into before ``commit``."""
        ...

    def commit(self, staged: Path, key: str) -> None:
        """Publish ``staged`` under ``key`` all at once (a reader never sees half a file)."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when it is gone."""
        ...

    def signed_url(self, key: str, ttl_s: int) -> str | None:
        """A link the backend signs itself (S3 presigned GET), or None to use the server's own."""
        ...

    def serve(
        self, key: str, media_type: str, *, redirect: bool, disposition: str | None = None
    ) -> Served | None:
        """Where to send the object from, or None if gone. ``redirect`` allows a link the backend signs
        instead of the bytes; ``media_type`` and ``disposition`` (a Content-Disposition) hold there too."""
        ...

    def remove_partials(self) -> int:
        """Delete files left half-written by a process that died mid-write (run at start-up)."""
        ...
