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

from sqlalchemy import Connection, create_engine, text

ADMIN_URL = os.environ.get("OPENREEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DIALECTS = ("sqlite", "postgresql")


@contextmanager
def _admin() -> Iterator[Connection]:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            yield connection
    finally:
        admin.dispose()


@contextmanager
def throwaway_database(dialect: str, directory: Path) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{directory / 'openreel.db'}"
        return
    name = f"openreel_test_{uuid.uuid4().hex[:12]}"
    with _admin() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with _admin() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def end_connections(url: str) -> None:
    """Every connection to a throwaway PostgreSQL database ended, as a restart of the server ends them
    (waiting for each backend to exit)."""
    terminate = "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = :name"
    with _admin() as connection:
        ended = connection.execute(text(terminate), {"name": url.rsplit("/", 1)[1]}).scalars().all()
    assert ended and all(ended)
