"""Group commit for usage events: each request waits for its own event to be durable.

The gateway hands every metered action (an inference request, a stream frame) to a
:class:`MeterWriter` and answers only after the event is committed, so a 2xx is never lost,
even to ``kill -9``; and every event has a unique key, so a replay never counts it twice.
One writer thread commits whatever has queued up in one transaction (``record_many``), so
throughput grows with load instead of paying one commit per request.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from kaon.db.engine import session_scope
from kaon.errors import UnavailableError
from kaon.platform import metering
from kaon.platform.common import period_of
from kaon.platform.models import UsageEvent


@dataclass
class _Pending:
    event: dict[str, Any]
    done: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class MeterWriter:
    def __init__(self, max_batch: int = 2000, max_queue: int = 50_000) -> None:
        self.max_batch = max_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.written = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kaon-meter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def record(self, workspace_id: str, metric: str, quantity: int, event_key: str,
                     source: Mapping[str, Any] | None = None) -> bool:
        """Queue one event and wait until it is committed (a known key counts once)."""
        event = metering.make_event(workspace_id, metric, quantity, event_key, source, None)
        loop = asyncio.get_running_loop()
        pending = _Pending(event, loop.create_future(), loop)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise UnavailableError("Usage metering is behind; the request was not served.",
                                   hint="Retry in a second.") from None
        return await pending.done

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with session_scope() as s:
                self.written += metering.record_many(s, [p.event for p in batch])
            results: list[bool | BaseException] = [True] * len(batch)  # durable now
        except Exception as exc:  # the database is down: fail these requests, keep going
            results = [UnavailableError(f"Usage could not be recorded: {exc}",
                                        hint="Retry shortly.")] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            pending.loop.call_soon_threadsafe(_settle, pending.done, result)


def _settle(future: asyncio.Future[bool], result: bool | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def refund(workspace_id: str, event_key: str) -> None:
    """Take back a consumed unit whose request failed: delete its event, lower its counter."""
    with session_scope() as s:
        event = s.scalar(select(UsageEvent).where(UsageEvent.event_key == event_key,
                                                  UsageEvent.workspace_id == workspace_id))
        if event is None:
            return
        metering.bump(s, {(workspace_id, period_of(event.occurred_at), event.metric):
                          -event.quantity})
        s.execute(delete(UsageEvent).where(UsageEvent.id == event.id))
