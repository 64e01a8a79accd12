"""Dynamic batching: single requests in, batches out, with bounded memory.

The wait window opens when the *first* item of a batch arrives (no fixed poll) and the batch
is flushed at ``max_batch_size`` units or ``max_wait_ms``, whichever comes first; if the model
is still busy with the last batch when the window closes, the batch keeps taking items until
the model is free (a batch closed early would only wait, while later items queued behind
it for a batch of their own). A batcher given :class:`Arrivals` (a server's: the requests
being read or decoded) also flushes before its window closes when the model is free and no
request is on its way: the window is a bet on company, and then none is coming (decision
0028). An item is
one unit unless submitted as more (a request's images travel as one item of that many units:
one future for the lot, not one per image). The queue is bounded in units (past
``max_queue``, an immediate 503 with Retry-After), every item has a deadline (504), an item
whose caller went away is dropped before it reaches the model, and an exception for one item
fails that item only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kaon.errors import KaonError

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(KaonError):
    """The queue is full: try again shortly."""

    http_status = 503

    def __init__(self, depth: int, retry_after: float) -> None:
        super().__init__(f"The server is at capacity ({depth} items queued).",
                         hint=f"Retry after {retry_after:.0f}s, or add replicas.")
        self.retry_after = retry_after


class RequestTimeout(KaonError):
    http_status = 504


class OverQueueBound(KaonError):
    """One request holds more items than the whole queue: no retry could ever succeed."""

    http_status = 413

    def __init__(self, items: int, max_queue: int) -> None:
        super().__init__(f"The request holds {items} images; this server queues at most "
                         f"{max_queue}.",
                         hint=f"Send at most {max_queue} images per request, or start the "
                              f"server with a larger --max-queue.")


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_wait_ms < 0 or self.max_queue < 1:
            raise ValueError(f"invalid batch policy {self}")


@dataclass
class _Item(Generic[T]):
    value: T
    future: asyncio.Future[Any]
    units: int = 1
    enqueued: float = field(default_factory=time.perf_counter)
    counted: bool = False  # its units are in Batcher.queued (_count_in, _count_out)


BatchFn = Callable[[Sequence[T]], Sequence[Any]]


class Arrivals:
    """The requests a server is reading or decoding that have not reached a batcher yet.

    A server wraps each POST in :meth:`expect`; the request stops counting when it submits
    its first item (:meth:`Batcher.submit`), reaches a handler that batches nothing
    (:func:`arrived`), or ends without either (a 422, a 404)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def expect(self) -> Iterator[None]:
        arrival = _Arrival(self)
        token = _ARRIVING.set(arrival)
        try:
            yield
        finally:
            arrival.done()
            _ARRIVING.reset(token)


class _Arrival:
    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals, self.coming = arrivals, True
        arrivals.count += 1

    def done(self) -> None:
        if self.coming:
            self.coming = False
            self.arrivals.count -= 1


_ARRIVING: ContextVar[_Arrival | None] = ContextVar("kaon_arriving", default=None)
#: this process's, for all its batchers: a model's or a service's server counts its POSTs
#: here (kaon.serve.app.Observe)
ARRIVALS = Arrivals()


def arrived() -> None:
    """The current request has reached its batcher, or goes to none (a service's unbatched
    handler): it no longer counts as on its way."""
    arrival = _ARRIVING.get()
    if arrival is not None:
        arrival.done()


def run_isolated(fn: BatchFn[T], items: Sequence[T]) -> list[Any]:
    """Call ``fn`` on the batch; if it raises, retry item by item so only bad items fail.

    ``fn`` may also return an ``Exception`` in place of a result to fail one item.
    """
    try:
        results = list(fn(items))
    except Exception:
        if len(items) == 1:
            raise
    else:  # a miscount is the function's defect, not an item's: no retry (no extra calls)
        if len(results) != len(items):
            raise BatchCountError(len(results), len(items))
        return results
    out: list[Any] = []
    for item in items:
        try:
            one = list(fn([item]))
            out.append(one[0] if len(one) == 1 else BatchCountError(len(one), 1))
        except Exception as exc:
            out.append(exc)
    return out


class BatchCountError(RuntimeError):
    """A batch function returned another number of results than it was given items."""

    def __init__(self, results: int, items: int) -> None:
        super().__init__(f"the batch function returned {results} result(s) for {items} "
                         f"item(s); it must return one per item, in order")


class Batcher(Generic[T, R]):
    """Feeds ``fn`` (blocking, batch in → results out) from an asyncio queue."""

    def __init__(self, fn: BatchFn[T], policy: BatchPolicy, *,
                 on_batch: Callable[[int, float], None] | None = None, threads: int = 1,
                 arrivals: Arrivals | None = None) -> None:
        self.fn, self.policy, self.on_batch = fn, policy, on_batch
        self.arrivals = arrivals  # None: every batch waits out its window
        self.queue: asyncio.Queue[_Item[T]] = asyncio.Queue()  # bounded in units, by submit
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kaon-batch")
        self.in_flight = asyncio.Semaphore(threads)
        self._freed = asyncio.Event()  # set when a running batch ends (a slot is free)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._held: _Item[T] | None = None  # did not fit the last batch: opens the next
        self._collecting: list[_Item[T]] = []  # the batch being filled, or waiting to run
        self.queued = 0  # units waiting (queue and held)
        self.dropped = 0  # units dropped because their caller went away

    @property
    def depth(self) -> int:
        return self.queued

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self, drain: bool = True) -> None:
        """Stop collecting; with ``drain``, finish what is queued and in flight first."""
        if drain:  # until every item is in a batch that runs, then until those finish
            while self.queued or self._collecting:
                await asyncio.sleep(0.005)
            while self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        left = [*self._collecting, *([self._held] if self._held else [])]
        while not self.queue.empty():
            left.append(self.queue.get_nowait())
        for item in left:
            if not item.future.done():
                item.future.set_exception(KaonError("The server is shutting down."))
        self.executor.shutdown(wait=drain)

    async def submit(self, value: T, timeout: float | None = None, units: int = 1) -> R:
        """Queue one item of ``units`` (at most ``max_batch_size``) and wait for its result
        (cancel the wait to drop the item)."""
        if self.queued and self.queued + units > self.policy.max_queue:
            raise Overloaded(self.queued, retry_after=1.0)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        item = _Item(value, future, units)
        self.queue.put_nowait(item)
        self._count_in(item)
        arrived()
        try:
            return await asyncio.wait_for(future, timeout or self.policy.timeout_s)
        except asyncio.TimeoutError:  # (not the builtin before 3.11)
            self._count_out(item)
            raise RequestTimeout(f"No result within {timeout or self.policy.timeout_s:.1f}s.",
                                 hint="The server is overloaded; retry later.") from None
        except asyncio.CancelledError:  # the caller went away
            self._count_out(item)
            raise

    def _count_in(self, item: _Item[T]) -> None:
        if not item.counted:
            item.counted = True
            self.queued += item.units

    def _count_out(self, item: _Item[T]) -> None:
        """Take ``item``'s units out of the queue's count at once. An item whose caller left
        stays in the queue until the collector reaches it, which can be a whole batch later
        (the model busy): counted meanwhile, it made the queue look fuller than it was, and
        new requests got 503s while everything waiting was dead."""
        if item.counted:
            item.counted = False
            self.queued -= item.units

    async def _next_live(self, timeout: float | None) -> _Item[T] | None:
        """The next queued item whose caller still waits (cancelled ones are dropped)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while True:
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and left <= 0:
                return None
            try:
                item = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:  # (not the builtin before 3.11)
                return None
            if self._live(item):
                return item

    async def _next_live_while_busy(self) -> _Item[T] | None:
        """The next live item, or None once the model can take a batch."""
        while self.in_flight.locked():
            self._freed.clear()
            get = asyncio.ensure_future(self.queue.get())
            freed = asyncio.ensure_future(self._freed.wait())
            try:
                await asyncio.wait((get, freed), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # stop(): an item already taken is failed with
                get.cancel()  # the batch being collected
                if get.done() and not get.cancelled():
                    item = get.result()
                    self._count_out(item)
                    self._collecting.append(item)
                raise
            finally:
                freed.cancel()
            if not get.done():
                get.cancel()  # asyncio.Queue.get leaves the item queued when cancelled
                await asyncio.wait((get,))
            if get.cancelled():
                return None
            item = get.result()
            if self._live(item):
                return item
        return None

    def _take_ready(self) -> _Item[T] | None:
        """A live item already queued, without awaiting (cheap under load)."""
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if self._live(item):
                return item
        return None

    def _live(self, item: _Item[T]) -> bool:
        """Count ``item`` out of the queue; False (and dropped) if its caller left."""
        self._count_out(item)
        if item.future.done():  # cancelled: the client disconnected or timed out
            self.dropped += item.units
            return False
        return True

    async def _first(self) -> _Item[T]:
        """The item that opens the next batch: the one held back from the last, if live."""
        held, self._held = self._held, None
        if held is not None and self._live(held):  # counted back in when it was held
            return held
        item = await self._next_live(None)
        assert item is not None
        return item

    async def _collect(self) -> None:
        wait = self.policy.max_wait_ms / 1000
        while True:
            first = await self._first()
            batch, units = [first], first.units
            self._collecting = batch
            window_ends = time.perf_counter() + wait  # the window opens with the first item
            while units < self.policy.max_batch_size:
                item = self._take_ready()
                if item is None:
                    left = window_ends - time.perf_counter()
                    if left > 0 and self._none_coming():
                        break
                    if left > 0:
                        item = await self._next_live(left)
                        if item is None:
                            continue  # the window has closed: is the model free?
                    elif self.in_flight.locked():  # no: fill until it is
                        item = await self._next_live_while_busy()
                        if item is None:
                            break
                    else:
                        break
                if units + item.units > self.policy.max_batch_size:
                    self._held = item  # does not fit: it opens the next batch
                    self._count_in(item)
                    break
                batch.append(item)
                units += item.units
            await self.in_flight.acquire()
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            self._collecting = []

    def _none_coming(self) -> bool:
        """The model is free and no request is on its way: waiting would gain no company."""
        return (self.arrivals is not None and self.arrivals.count == 0
                and not self.in_flight.locked())

    async def _run(self, batch: list[_Item[T]]) -> None:
        try:
            live = [i for i in batch if not i.future.done()]
            self.dropped += sum(i.units for i in batch) - sum(i.units for i in live)
            if not live:
                return
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                results = await loop.run_in_executor(
                    self.executor, run_isolated, self.fn, [i.value for i in live])
            except Exception as exc:
                results = [exc] * len(live)
            if self.on_batch:
                self.on_batch(sum(i.units for i in live), time.perf_counter() - started)
            for item, result in zip(live, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        finally:
            self.in_flight.release()
            self._freed.set()
