"""Durable usage events for the gateway: a local append-only journal, or group commit.

The gateway hands every metered action (an inference request, a stream frame) to a
:class:`MeterWriter` and answers only once the event is durable, so a 2xx is never lost, even
to ``kill -9``; every event has a unique key, so a replay never counts it twice.

- With a journal directory (``kaon up``): the event is appended to the current journal
  segment (one ``write`` of one JSON line, no fsync: it survives the process, not the
  machine) and the request goes on at once. A writer thread commits queued events to the
  database in batches (``record_many``, one every ``linger_s``, 50 ms, or 2,000 events)
  and deletes a segment once all of it is committed;
  segments left by a crash are replayed into the database on the next start.
- Without one: each caller waits for the transaction that holds its event (group commit: one
  writer thread commits whatever queued up, so throughput grows with load).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
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
    done: asyncio.Future[bool] | None
    loop: asyncio.AbstractEventLoop | None


@dataclass
class _Rotated:
    """Every event before this marker was written to ``segment``: delete it once committed."""

    segment: Path


_Item = _Pending | _Rotated | None


class MeterWriter:
    def __init__(self, journal: Path | None = None, max_batch: int = 2000,
                 max_queue: int = 50_000, rotate_s: float = 2.0,
                 linger_s: float | None = None) -> None:
        """``linger_s``: how long the writer collects events before it commits them (like
        Kafka's ``linger.ms``). Journaled events are already durable, so the default waits
        50 ms and commits about 20 batches a second instead of one per request, which left
        the gateway's CPU to the requests; without a journal callers wait, so 0."""
        self.journal, self.max_batch, self.rotate_s = journal, max_batch, rotate_s
        self.linger_s = linger_s if linger_s is not None else (0.05 if journal else 0.0)
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._fd: int | None = None
        self._segment: Path | None = None
        self._rotated_at = 0.0
        self.written = 0
        self.replayed = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self.journal is not None:
            self.journal.mkdir(parents=True, exist_ok=True)
            self.replayed = replay(self.journal)
            self._open_segment()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="kaon-meter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued (and drop the journal it came from), then stop."""
        if self._thread is not None:
            self._stopping.set()
            with self._lock:
                if self._segment is not None:
                    self._queue.put(_Rotated(self._segment))
                    os.close(self._fd)  # type: ignore[arg-type]
                    self._fd, self._segment = None, None
            self._queue.put(None)
            self._thread.join(timeout=60)
            self._thread = None

    def _open_segment(self) -> None:
        assert self.journal is not None
        self._segment = self.journal / f"{time.time_ns():020d}-{os.getpid()}.jsonl"
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._rotated_at = time.monotonic()

    # -- the caller's side ----------------------------------------------------------------
    async def record(self, workspace_id: str, metric: str, quantity: int, event_key: str,
                     source: Mapping[str, Any] | None = None) -> bool:
        """Make one event durable: journaled (then committed in the background), or committed
        before this returns (a known key counts once either way)."""
        event = metering.make_event(workspace_id, metric, quantity, event_key, source, None)
        if self.journal is not None:
            line = json.dumps({**event, "occurred_at": event["occurred_at"].isoformat()})
            with self._lock:
                if self._fd is None:
                    raise UnavailableError("Usage metering is stopping.", hint="Retry shortly.")
                self._put(_Pending(event, None, None))
                os.write(self._fd, line.encode() + b"\n")
            return True
        loop = asyncio.get_running_loop()
        pending = _Pending(event, loop.create_future(), loop)
        self._put(pending)
        return await pending.done  # type: ignore[misc]

    def _put(self, item: _Pending) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise UnavailableError("Usage metering is behind; the request was not served.",
                                   hint="Retry in a second.") from None

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch: list[_Pending] = []
            done: list[Path] = []
            item = self._queue.get()
            if self.linger_s and item is not None:
                # sleep rather than wait on the queue: a waiting writer would be woken (and
                # take the GIL) by every request's put
                self._stopping.wait(self.linger_s)
            while True:
                if item is None:
                    self._commit(batch, done)
                    return
                if isinstance(item, _Rotated):
                    done.append(item.segment)
                else:
                    batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._commit(batch, done)
            self._maybe_rotate()

    def _maybe_rotate(self) -> None:
        if self.journal is None or time.monotonic() - self._rotated_at < self.rotate_s:
            return
        with self._lock:
            if self._segment is None:
                return
            old, fd = self._segment, self._fd
            self._open_segment()
            self._queue.put(_Rotated(old))  # after every event written to ``old``
        os.close(fd)  # type: ignore[arg-type]

    def _commit(self, batch: list[_Pending], segments: list[Path]) -> None:
        while True:
            try:
                if batch:
                    with session_scope() as s:
                        self.written += metering.record_many(s, [p.event for p in batch])
                results: list[bool | BaseException] = [True] * len(batch)
                break
            except Exception as exc:
                if self.journal is not None:  # journaled: keep trying, nothing is lost
                    time.sleep(1.0)
                    continue
                results = [UnavailableError(f"Usage could not be recorded: {exc}",
                                            hint="Retry shortly.")] * len(batch)
                segments = []
                break
        for segment in segments:
            segment.unlink(missing_ok=True)
        for pending, result in zip(batch, results, strict=True):
            if pending.loop is not None and pending.done is not None:
                pending.loop.call_soon_threadsafe(_settle, pending.done, result)


def replay(journal: Path, chunk: int = 5000) -> int:
    """Commit the events of journal segments a crash left behind, then delete them.
    Events already in the database (same key) are skipped. Returns how many were new."""
    new = 0
    for segment in sorted(journal.glob("*.jsonl")):
        events = []
        for line in segment.read_text().splitlines():
            try:
                raw = json.loads(line)
            except ValueError:  # a line cut short by the crash: never acknowledged
                continue
            raw["occurred_at"] = datetime.fromisoformat(raw["occurred_at"])
            events.append(raw)
        for start in range(0, len(events), chunk):
            with session_scope() as s:
                new += metering.record_many(s, events[start:start + chunk])
        segment.unlink()
    return new


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
