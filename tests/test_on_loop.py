"""Where request work runs: on the event loop only while it touches nothing but this machine."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from openreel.ledger.db import Database
from openreel.service.services import on_loop_if_local


def test_work_runs_on_the_event_loop_only_where_it_touches_this_machine_alone() -> None:
    async def on_the_loop(local: bool, offload: bool) -> bool:
        svc: Any = SimpleNamespace(local_reads=local)
        ran_on = await on_loop_if_local(svc, threading.get_ident, offload=offload)
        return ran_on == threading.get_ident()

    assert anyio.run(on_the_loop, True, False)
    assert not anyio.run(on_the_loop, False, False)  # a database on another host, or S3: a worker thread
    assert not anyio.run(on_the_loop, True, True)  # files to fetch or store


@pytest.mark.parametrize(
    ("url", "here"),
    [
        ("sqlite:////tmp/openreel.db", True),
        ("postgresql+psycopg://openreel@127.0.0.1:5432/openreel", True),
        ("postgresql+psycopg://openreel@localhost/openreel", True),
        ("postgresql+psycopg://openreel@[::1]/openreel", True),
        ("postgresql+psycopg:///openreel?host=/var/run/postgresql", True),  # a Unix socket
        ("postgresql+psycopg://openreel@db.internal:5432/openreel", False),
        ("postgresql+psycopg://openreel@10.0.0.5/openreel", False),
        ("postgresql+psycopg:///openreel?host=db.internal", False),  # libpq's own parameter
        ("postgresql+psycopg:///openreel", False),  # with PGHOST=db.internal
    ],
)
def test_a_database_is_on_this_machine_when_reaching_it_crosses_no_network(
    url: str, here: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGHOST", "db.internal")
    db = Database(url)  # nothing is connected
    try:
        assert db.on_this_machine is here
    finally:
        db.dispose()
