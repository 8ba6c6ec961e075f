"""Throwaway databases for tests: a SQLite file, or a fresh PostgreSQL database dropped afterwards.

PostgreSQL is reached through ``OPENREEL_TEST_POSTGRES_URL`` (default: the local server with trust
auth, as on the development and CI machines).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

ADMIN_URL = os.environ.get("OPENREEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DIALECTS = ("sqlite", "postgresql")


@contextmanager
def throwaway_database(dialect: str, directory: Path) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{directory / 'openreel.db'}"
        return
    name = f"openreel_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
