"""The dynamic batcher as plain asyncio: batch formation, bounds, isolation, drops, drain."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence

import pytest

from kaon.errors import KaonError
from kaon.serve.batching import (
    ARRIVALS,
    Arrivals,
    BatchCountError,
    Batcher,
    BatchPolicy,
    Overloaded,
    RequestTimeout,
    run_isolated,
)


class Recorder:
    """A batch function that doubles numbers, records batch sizes and can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.gate.wait(10)
        if any(i < 0 for i in items):
            raise ValueError(f"negative item in {list(items)}")
        self.batches.append(list(items))
        return [2 * i for i in items]


@contextlib.contextmanager
def another_request_on_its_way() -> Iterator[None]:
    """As while a slow client is still sending: a server's batches wait out their window
    (decision 0028), so concurrent requests from a test batch together as they did."""
    with ARRIVALS.expect():
        yield


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def started(fn: Recorder, **policy: float) -> Batcher[int, int]:
    batcher: Batcher[int, int] = Batcher(fn, BatchPolicy(**policy))  # type: ignore[arg-type]
    batcher.start()
    return batcher


def test_concurrent_requests_form_batches_up_to_the_maximum() -> None:
    async def main() -> list[list[int]]:
        fn = Recorder()
        batcher = await started(fn, max_batch_size=8, max_wait_ms=50)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        await batcher.stop()
        assert results == [2 * i for i in range(20)]
        return fn.batches

    batches = run(main())
    assert max(len(b) for b in batches) == 8
    assert sum(len(b) for b in batches) == 20


def test_a_full_batch_is_flushed_without_waiting_for_the_window() -> None:
    async def main() -> float:
        batcher = await started(Recorder(), max_batch_size=4, max_wait_ms=60_000)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(batcher.submit(i) for i in range(4)))
        await batcher.stop()
        return loop.time() - t0

    assert run(main()) < 30  # far below the 60 s window: flushed by size


def test_the_window_opens_with_the_first_item() -> None:
    async def main() -> list[list[int]]:
        fn = Recorder()
        batcher = await started(fn, max_batch_size=100, max_wait_ms=1_500)
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # well inside the first item's window
        second = asyncio.ensure_future(batcher.submit(2))
        await asyncio.gather(first, second)
        await asyncio.sleep(0.05)
        third = await batcher.submit(3)  # a new window, a new batch
        await batcher.stop()
        assert third == 6
        return fn.batches

    assert run(main()) == [[1, 2], [3]]


def test_with_arrivals_counted_a_batch_waits_only_for_requests_on_their_way() -> None:
    """A lone request runs at once, not after the window; one whose window opens while
    another request is being read waits for it (and only for it)."""
    async def main() -> tuple[list[list[int]], float]:
        fn, arrivals = Recorder(), Arrivals()
        policy = BatchPolicy(max_batch_size=100, max_wait_ms=60_000)
        batcher: Batcher[int, int] = Batcher(fn, policy,  # type: ignore[arg-type]
                                             arrivals=arrivals)
        batcher.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with arrivals.expect():
            assert await batcher.submit(1) == 2
        alone = loop.time() - t0

        async def request(value: int, read_s: float) -> int:
            with arrivals.expect():
                await asyncio.sleep(read_s)  # its body is being read
                result = await batcher.submit(value)
                assert arrivals.count <= 1  # it stopped counting once it submitted
                return result

        assert await asyncio.gather(request(2, 0.0), request(3, 0.2)) == [4, 6]
        with arrivals.expect():  # a request that fails before it submits (a 422)
            pass
        assert arrivals.count == 0
        await batcher.stop()
        return fn.batches, alone

    batches, alone = run(main())
    assert alone < 30  # far below the 60 s window
    assert batches == [[1], [2, 3]]


def test_while_the_model_is_busy_a_closed_window_keeps_filling_the_next_batch() -> None:
    async def main() -> list[list[int]]:
        fn = Recorder()
        fn.gate.clear()  # the model is busy with the first batch until the gate opens
        batcher = await started(fn, max_batch_size=8, max_wait_ms=1)
        calls = [asyncio.ensure_future(batcher.submit(0))]
        await asyncio.sleep(0.05)  # [0] has gone to the model
        for i in (1, 2, 3):  # each arrives after the window its predecessor opened
            calls.append(asyncio.ensure_future(batcher.submit(i)))
            await asyncio.sleep(0.05)
        fn.gate.set()
        assert await asyncio.gather(*calls) == [0, 2, 4, 6]
        await batcher.stop()
        return fn.batches

    # not [[0], [1], [2, 3]]: a batch closed while the model was busy would only wait
    assert run(main()) == [[0], [1, 2, 3]]


def test_stop_without_drain_fails_a_batch_filling_while_the_model_is_busy() -> None:
    async def main() -> tuple[object, int]:
        fn = Recorder()
        fn.gate.clear()
        batcher = await started(fn, max_batch_size=8, max_wait_ms=1)
        busy = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)
        filling = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # its window has closed; it waits for the busy model
        await batcher.stop(drain=False)
        fn.gate.set()
        (failed,) = await asyncio.gather(filling, return_exceptions=True)
        await asyncio.gather(busy, return_exceptions=True)
        return failed, batcher.depth

    failed, depth = run(main())
    assert isinstance(failed, KaonError) and "shutting down" in str(failed)
    assert depth == 0


def test_one_bad_item_fails_only_itself() -> None:
    async def main() -> list[object]:
        batcher = await started(Recorder(), max_batch_size=8, max_wait_ms=50)
        results = await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 3)),
                                       return_exceptions=True)
        await batcher.stop()
        return results

    good1, bad, good3 = run(main())
    assert good1 == 2 and good3 == 6
    assert isinstance(bad, ValueError)


def test_a_full_queue_answers_overloaded_instead_of_growing() -> None:
    async def main() -> int:
        fn = Recorder()
        fn.gate.clear()  # the model is stuck: nothing leaves the queue
        batcher = await started(fn, max_batch_size=2, max_wait_ms=1, max_queue=3)
        pending, accepted = [], 0
        with pytest.raises(Overloaded) as info:
            for i in range(50):
                task = asyncio.ensure_future(batcher.submit(i))
                pending.append(task)
                await asyncio.sleep(0.01)
                if task.done() and task.exception():
                    raise task.exception()  # type: ignore[misc]
                accepted += 1
        assert info.value.http_status == 503 and info.value.retry_after > 0
        fn.gate.set()
        await asyncio.gather(*pending, return_exceptions=True)
        await batcher.stop()
        return accepted

    # queue (3) + the batch being collected (2) + the batch in the model (2)
    assert run(main()) <= 3 + 2 + 2


def test_a_cancelled_request_is_dropped_before_the_model_sees_it() -> None:
    async def main() -> tuple[list[list[int]], int]:
        fn = Recorder()
        fn.gate.clear()
        batcher = await started(fn, max_batch_size=1, max_wait_ms=1)
        busy = asyncio.ensure_future(batcher.submit(1))  # occupies the model
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit(2))  # waits in the queue...
        await asyncio.sleep(0.05)
        gone.cancel()  # ...and its client disconnects
        fn.gate.set()
        await busy
        await asyncio.sleep(0.1)
        await batcher.stop()
        return fn.batches, batcher.dropped

    batches, dropped = run(main())
    assert batches == [[1]] and dropped == 1


def test_a_request_past_its_deadline_times_out() -> None:
    async def main() -> None:
        fn = Recorder()
        fn.gate.clear()
        batcher = await started(fn, max_batch_size=1, max_wait_ms=1, timeout_s=0.1)
        with pytest.raises(RequestTimeout):
            await batcher.submit(1)
        fn.gate.set()
        await batcher.stop()

    run(main())


def test_stop_drains_queued_work() -> None:
    async def main() -> list[int]:
        batcher = await started(Recorder(), max_batch_size=2, max_wait_ms=20)
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]
        await asyncio.sleep(0)
        await batcher.stop(drain=True)
        return [t.result() for t in tasks]

    assert run(main()) == [0, 2, 4, 6, 8, 10]


def test_stop_drains_a_batch_still_in_its_wait_window() -> None:
    async def main() -> list[int]:
        batcher = await started(Recorder(), max_batch_size=8, max_wait_ms=200)
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0.02)  # all three taken into a batch whose window is still open
        assert batcher.depth == 0
        await batcher.stop(drain=True)
        return [t.result() for t in tasks if t.done()]

    assert run(main()) == [0, 2, 4]


def test_a_wrong_result_count_fails_the_batch_with_its_count_and_calls_once() -> None:
    """A miscount is the batch function's defect: it is named, and the function is not run
    again item by item (once per item more, which a handler with side effects would feel)."""
    calls: list[int] = []

    def miscounts(items: Sequence[int]) -> list[int]:
        calls.append(len(items))
        return [len(items)]

    with pytest.raises(BatchCountError, match=r"returned 1 result\(s\) for 2 item\(s\)"):
        run_isolated(miscounts, [7, 8])
    assert calls == [2]
    # an item that raises still fails alone; a miscount in the one-by-one retry names itself
    def flaky(items: Sequence[int]) -> list[int]:
        if len(items) > 1 or items[0] == 8:
            raise ValueError("bad item")
        return [items[0], items[0]]

    out = run_isolated(flaky, [7, 8])
    assert isinstance(out[0], BatchCountError) and isinstance(out[1], ValueError)


# ---- items of several units (a request's images travel together) -----------------------------
def test_items_fill_batches_by_units_and_one_that_does_not_fit_opens_the_next() -> None:
    async def main() -> tuple[list[list[int]], list[float], int]:
        fn = Recorder()
        sizes: list[float] = []
        batcher: Batcher[int, int] = Batcher(fn, BatchPolicy(max_batch_size=8, max_wait_ms=50),
                                             on_batch=lambda n, _: sizes.append(n))
        batcher.start()
        fn.gate.clear()  # everything queues before the first batch is taken
        units = {10: 5, 11: 4, 12: 3, 13: 1}
        calls = [asyncio.ensure_future(batcher.submit(v, units=u)) for v, u in units.items()]
        await asyncio.sleep(0.01)
        fn.gate.set()
        assert await asyncio.gather(*calls) == [20, 22, 24, 26]
        await batcher.stop()
        return fn.batches, sizes, batcher.depth

    batches, sizes, depth = run(main())
    assert batches == [[10], [11, 12, 13]]  # 5 + 4 > 8: the 4 is held and opens the next
    assert sizes == [5, 8] and depth == 0  # the batch-size metric counts units


def test_a_held_item_whose_caller_left_is_dropped_with_its_units() -> None:
    async def main() -> tuple[list[list[int]], int, int]:
        fn = Recorder()
        fn.gate.clear()
        batcher = await started(fn, max_batch_size=4, max_wait_ms=50)
        first = asyncio.ensure_future(batcher.submit(1, units=3))
        held = asyncio.ensure_future(batcher.submit(2, units=2))  # 3 + 2 > 4: held
        await asyncio.sleep(0.01)
        held.cancel()
        after = asyncio.ensure_future(batcher.submit(3, units=1))
        await asyncio.sleep(0.01)
        fn.gate.set()
        assert await asyncio.gather(first, after) == [2, 6]
        await batcher.stop()
        return fn.batches, batcher.dropped, batcher.depth

    batches, dropped, depth = run(main())
    assert batches == [[1], [3]] and dropped == 2 and depth == 0


def test_the_queue_bound_counts_units() -> None:
    async def main() -> None:
        fn = Recorder()
        fn.gate.clear()
        batcher = await started(fn, max_batch_size=4, max_wait_ms=0, max_queue=6)
        running = asyncio.ensure_future(batcher.submit(1, units=4))  # in the model
        await asyncio.sleep(0.01)
        next_batch = asyncio.ensure_future(batcher.submit(2, units=4))  # collected, waits
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.submit(3, units=4))  # in the queue
        await asyncio.sleep(0.01)
        assert batcher.depth == 4
        with pytest.raises(Overloaded):
            await batcher.submit(4, units=3)  # 4 + 3 > 6
        small = asyncio.ensure_future(batcher.submit(5, units=2))  # 4 + 2 fits
        await asyncio.sleep(0.01)
        assert batcher.depth == 6
        fn.gate.set()
        assert await asyncio.gather(running, next_batch, queued, small) == [2, 4, 6, 10]
        await batcher.stop()

    run(main())


def test_a_dropped_item_counts_its_units() -> None:
    async def main() -> int:
        fn = Recorder()
        fn.gate.clear()
        batcher = await started(fn, max_batch_size=4, max_wait_ms=0)
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)
        leaving = asyncio.ensure_future(batcher.submit(2, units=3))
        await asyncio.sleep(0.01)
        leaving.cancel()
        fn.gate.set()
        assert await first == 2
        await batcher.stop()
        assert fn.batches == [[1]]
        return batcher.dropped

    assert run(main()) == 3


def test_callers_that_left_stop_counting_against_the_queue_at_once() -> None:
    """A cancelled or timed-out item stays in the queue until the collector reaches it (a
    whole batch later while the model is busy): counted until then, it made the queue look
    full, and new requests got 503s while everything waiting was dead."""
    async def main() -> None:
        fn = Recorder()
        fn.gate.clear()  # the model is busy
        batcher = await started(fn, max_batch_size=1, max_wait_ms=0, max_queue=2)
        running = asyncio.ensure_future(batcher.submit(1))  # in the model
        await asyncio.sleep(0.01)
        collected = asyncio.ensure_future(batcher.submit(2))  # the next batch, waiting
        await asyncio.sleep(0.01)
        gone = [asyncio.ensure_future(batcher.submit(i, timeout=0.05)) for i in (3, 4)]
        await asyncio.sleep(0.01)
        assert batcher.depth == 2
        for outcome in await asyncio.gather(*gone, return_exceptions=True):
            assert isinstance(outcome, RequestTimeout)
        assert batcher.depth == 0  # before: 2, until the model finished two batches
        fresh = asyncio.ensure_future(batcher.submit(5))  # before: Overloaded
        await asyncio.sleep(0.01)
        fn.gate.set()
        assert await asyncio.gather(running, collected, fresh) == [2, 4, 10]
        await batcher.stop()
        assert fn.batches == [[1], [2], [5]] and batcher.dropped == 2

    run(main())
