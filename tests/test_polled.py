"""Where a poll's read runs: on the event loop only while it touches nothing but this machine."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import anyio

from openreel.service.services import polled


def test_polls_run_on_the_event_loop_only_where_they_read_this_machine() -> None:
    async def on_the_loop(local: bool) -> bool:
        svc: Any = SimpleNamespace(local_reads=local)
        return await polled(svc, threading.get_ident) == threading.get_ident()

    assert anyio.run(on_the_loop, True)
    assert not anyio.run(on_the_loop, False)  # PostgreSQL or S3: a worker thread
