"""A psycopg cursor that describes its results as cheaply as DB-API allows.

Imported only where the database is PostgreSQL through psycopg: psycopg takes a tenth of a second to import.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import ExecStatus

RETURNS_ROWS = (ExecStatus.TUPLES_OK, ExecStatus.SINGLE_TUPLE, ExecStatus.TUPLES_CHUNK)


class PlainDescriptionCursor(psycopg.Cursor[Any]):
    """Describes each result column by its name and type code alone: all that SQLAlchemy reads, and all
    DB-API requires. psycopg's own description builds an object per column that looks up its type, for
    every statement: for a 26-column job row, a tenth of a PostgreSQL read's client CPU
    (``bench/api_load.py``'s job read)."""

    @property
    def description(self) -> list[tuple[Any, ...]] | None:  # type: ignore[override]
        result = self.pgresult
        if result is None or not (result.nfields or result.status in RETURNS_ROWS):
            return None
        encoding = self.connection.info.encoding
        fields = range(result.nfields)
        return [(_name(result.fname(i), i, encoding), result.ftype(i), *UNKNOWN) for i in fields]


UNKNOWN = (None,) * 5


def _name(raw: bytes | None, index: int, encoding: str) -> str:
    """As psycopg names a column: a COPY's columns have no names."""
    return raw.decode(encoding) if raw else f"column_{index + 1}"
