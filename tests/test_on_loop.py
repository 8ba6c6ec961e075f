"""Where request work runs: on the event loop only while it touches nothing but this machine."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import anyio

from openreel.service.services import on_loop_if_local


def test_work_runs_on_the_event_loop_only_where_it_touches_this_machine_alone() -> None:
    async def on_the_loop(local: bool, offload: bool) -> bool:
        svc: Any = SimpleNamespace(local_reads=local)
        ran_on = await on_loop_if_local(svc, threading.get_ident, offload=offload)
        return ran_on == threading.get_ident()

    assert anyio.run(on_the_loop, True, False)
    assert not anyio.run(on_the_loop, False, False)  # PostgreSQL or S3: a worker thread
    assert not anyio.run(on_the_loop, True, True)  # files to fetch or store
