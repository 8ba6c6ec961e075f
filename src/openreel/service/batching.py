"""Requests that arrive together share one visit to the database: submissions one transaction (group
commit), polled job reads one query.

A database takes one writer at a time, and most of a submission's cost was its own transaction (lock,
checks, inserts, commit: 0.8 ms on SQLite for one job, 0.16 ms a job in a batch of 16; a few round
trips on PostgreSQL); a polled read's was its statement and session (a PostgreSQL read: 0.14 ms of
client CPU and a round trip, for one row). The requests that reach this point while a batch runs wait
here and go in as the next batch; a request alone goes in on the next turn of the event loop (no timer).

A batch of submissions runs in a worker thread, one hop for all its requests: a database that is slow
or locked (SQLite by another process) then holds up the submissions, not the event loop. On the loop
instead, SQLite's batches were no faster (1,073 and 1,082 against 1,261 and 1,397 submissions a second,
bench/api_load.py). Reads of a database on this machine run on the loop (``on_loop``), as a single
read does (``services.on_loop_if_local``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio.to_thread

I = TypeVar("I")  # noqa: E741 - the item, beside its result R
R = TypeVar("R")


@dataclass
class Batcher(Generic[I, R]):
    """``run`` takes a batch and returns one outcome per item, in order. Should it raise one of the
    ``alone`` errors (one item's doing: a constraint it broke), the batch's items run again one by one,
    so that it is that item's error alone; any other error (the database unreachable, locked) is every
    item's."""

    run: Callable[[Sequence[I]], Sequence[R]]
    alone: tuple[type[Exception], ...] = ()
    on_loop: bool = False  # run each batch on the event loop rather than in a worker thread
    _pending: list[tuple[I, asyncio.Future[R]]] = field(default_factory=list)
    _draining: asyncio.Task[None] | None = None

    async def __call__(self, item: I) -> R:
        outcome: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, outcome))
        if self._draining is None:  # the loop holds tasks weakly: this reference keeps it running
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        return await outcome

    async def _drain(self) -> None:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._settle(batch)
        except BaseException as error:  # cancelled at shutdown, or a bug here: nobody is left waiting
            for _, outcome in batch + self._pending:
                if not outcome.done():
                    outcome.set_exception(error)
            self._pending = []
            raise
        finally:
            self._draining = None

    async def _settle(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = self.run(items) if self.on_loop else await anyio.to_thread.run_sync(self.run, items)
        except Exception as error:
            if len(batch) > 1 and isinstance(error, self.alone):
                for one in batch:
                    await self._settle([one])
                return
            for _, outcome in batch:
                if not outcome.done():
                    outcome.set_exception(error)
            return
        for (_, outcome), result in zip(batch, results, strict=True):
            if not outcome.done():  # its request may have been cancelled (the client went away)
                outcome.set_result(result)
