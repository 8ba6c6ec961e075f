from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from openreel.ledger.db import Database, migrate

from databases import DIALECTS, throwaway_database
from support import SERVER_ENV, LiveServer, quick_server, running_server

# The suite runs several processes at once on a few cores (the test process, servers, their workers): torch's
# intra-op threads then fight each other, and the tiny engine's small ops gain nothing from them. One thread
# per process, set before anything imports torch here or in a child process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The renders allocate and free frame-sized buffers many times over: glibc maps each above its mmap
# threshold and unmaps it when freed, and the page faults cost the renders a quarter of their CPU time
# (BENCHMARKS.md). Freed memory stays in the heap instead. Read by glibc when a process starts: the test
# processes pytest-xdist starts after this, and every server and worker they start.
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(4 << 30))
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(4 << 30))
# Ray clusters started by the tests (and the servers they start) listen on loopback only, without
# token auth; both are read when Ray starts a node or connects a driver.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, then the others; in each, the xdist groups (run one after another on one worker)
    before single tests, otherwise in collection order: pytest-xdist hands out tests in this order, and
    a long one handed out last ends the run alone."""
    items.sort(
        key=lambda item: (item.get_closest_marker("slow") is None, not item.get_closest_marker("xdist_group"))
    )


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server (SQLite) on a loopback port for the session, rendering with the quick engine;
    tests isolate themselves by account."""
    with quick_server(tmp_path_factory.mktemp("server"), SERVER_ENV) as live:
        yield live


@pytest.fixture(scope="session")
def server(sqlite_server: LiveServer) -> LiveServer:
    return sqlite_server


@pytest.fixture(scope="session")
def postgresql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The same, on a throwaway PostgreSQL database."""
    root = tmp_path_factory.mktemp("pg-server")
    with (
        throwaway_database("postgresql", root) as url,
        quick_server(root, {**SERVER_ENV, "OPENREEL_DATABASE_URL": url}) as live,
    ):
        yield live


@pytest.fixture(scope="session")
def live_sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server process with the tiny engine in its worker process, as ``openreel serve`` runs: for the
    end-to-end tests and those that need the processes themselves."""
    with running_server(tmp_path_factory.mktemp("live"), SERVER_ENV) as live:
        yield live


@pytest.fixture(scope="session")
def live_postgresql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("live-pg")
    with (
        throwaway_database("postgresql", root) as url,
        running_server(root, {**SERVER_ENV, "OPENREEL_DATABASE_URL": url}) as live,
    ):
        yield live


@pytest.fixture(params=DIALECTS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated throwaway database of each dialect, for tests of the ledger and the services on it."""
    with throwaway_database(request.param, tmp_path) as url:
        migrate(url)
        database = Database(url)
        yield database
        database.dispose()
