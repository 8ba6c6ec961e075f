"""Batching: requests that arrive together share a batch; one's failure stays its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from openreel.service.batching import Batcher


class Recorder:
    """Doubles each item; raises for the batches that hold a poisoned item."""

    def __init__(self, poison: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.poison = poison

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        if self.poison in items:
            raise ValueError(f"item {self.poison} is bad")
        return [2 * item for item in items]


def test_requests_arriving_together_share_one_batch_and_get_their_own_results() -> None:
    run = Recorder()
    commit = Batcher(run)

    async def main() -> tuple[list[int], int]:
        first = await asyncio.gather(*(commit(i) for i in range(5)))
        alone = await commit(7)
        return first, alone

    first, alone = asyncio.run(main())
    assert first == [0, 2, 4, 6, 8] and alone == 14
    assert run.batches == [[0, 1, 2, 3, 4], [7]]
    assert threading.get_ident() not in run.threads  # a slow database holds up no other request


def test_a_batch_on_the_loop_runs_in_the_loops_thread() -> None:
    """Reads of a database on this machine: no hop to a worker thread and back."""
    run = Recorder()
    read = Batcher(run, on_loop=True)

    async def main() -> list[int]:
        return await asyncio.gather(*(read(i) for i in range(3)))

    assert asyncio.run(main()) == [0, 2, 4]
    assert run.batches == [[0, 1, 2]] and run.threads == {threading.get_ident()}


def test_arrivals_during_a_batch_go_in_the_next_one() -> None:
    gate = threading.Event()
    run = Recorder()

    def slow(items: Sequence[int]) -> list[int]:
        gate.wait(5)
        return run(items)

    commit = Batcher(slow)

    async def main() -> list[int]:
        first = asyncio.ensure_future(commit(1))
        await asyncio.sleep(0.05)  # the first batch is running in its thread
        later = [asyncio.ensure_future(commit(i)) for i in (2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *later)

    assert asyncio.run(main()) == [2, 4, 6]
    assert run.batches == [[1], [2, 3]]


def test_a_batch_failing_by_one_item_is_retried_one_by_one_so_only_that_item_fails() -> None:
    run = Recorder(poison=2)
    commit = Batcher(run, alone=(ValueError,))

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(*(commit(i) for i in range(4)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[:2] == [0, 2] and outcomes[3] == 6
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "item 2 is bad"
    assert run.batches == [[0, 1, 2, 3], [0], [1], [2], [3]]


def test_an_error_that_is_no_one_items_fails_the_whole_batch_without_a_retry() -> None:
    run = Recorder(poison=2)
    commit = Batcher(run, alone=(KeyError,))  # a ValueError is not one item's

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(*(commit(i) for i in range(3)), return_exceptions=True)

    assert [str(outcome) for outcome in asyncio.run(main())] == ["item 2 is bad"] * 3
    assert run.batches == [[0, 1, 2]]


def test_a_drain_that_stops_leaves_nobody_waiting() -> None:
    gate = threading.Event()

    def stuck(items: Sequence[int]) -> list[int]:
        gate.wait(5)
        return list(items)

    commit = Batcher(stuck)

    async def main() -> list[int | BaseException]:
        first = asyncio.ensure_future(commit(1))
        await asyncio.sleep(0.05)  # the first batch is running
        later = asyncio.ensure_future(commit(2))
        await asyncio.sleep(0)
        assert commit._draining is not None
        commit._draining.cancel()  # as at shutdown
        try:
            return await asyncio.gather(first, later, return_exceptions=True)
        finally:
            gate.set()

    outcomes = asyncio.run(main())
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes), outcomes
    assert commit._draining is None
