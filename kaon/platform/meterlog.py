"""Durable usage events for the gateway: a local append-only journal, or group commit.

The gateway hands every metered action (an inference request, a stream frame) to a
:class:`MeterWriter` and answers only once the event is durable, so a 2xx is never lost, even
to ``kill -9``; every event has a unique key, so a replay never counts it twice.

- With a journal directory (``kaon up``): the event is appended to the current journal
  segment (one ``write`` of one JSON line, no fsync: it survives the process, not the
  machine) and the request goes on at once. A committer *process*
  (:mod:`kaon.platform.metercommit`) follows this process's segments and commits new lines
  in batches every ``linger_s`` (250 ms), deleting a segment once a later one exists and all
  of it is committed; it is started again at the next segment if it dies. Committing in
  its own process keeps the database work (about 40 µs an event) and its hold on the GIL
  off the gateway's event loop. Segments left by a crash are replayed on the next start;
  ``stop()`` commits what is left before it returns.
- Without one: each caller waits for the transaction that holds its event (group commit: one
  writer thread commits whatever queued up, so throughput grows with load).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import subprocess
import sys
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
from kaon.procs import die_with_parent

logger = logging.getLogger("kaon.meter")


@dataclass
class _Pending:
    event: dict[str, Any]
    done: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class MeterWriter:
    def __init__(self, journal: Path | None = None, max_batch: int = 2000,
                 max_queue: int = 50_000, rotate_s: float = 2.0,
                 linger_s: float | None = None) -> None:
        """With a ``journal``: ``rotate_s`` is how often a new segment starts and ``linger_s``
        how long events collect before the committer commits them (like Kafka's
        ``linger.ms``; 250 ms: journaled events are already durable). Without one (group
        commit): at most ``max_queue`` events wait, committed ``max_batch`` at a time, as soon
        as the writer thread is free. ``written`` counts what this process committed itself
        (group commit, and the replays at start and stop)."""
        self.journal, self.max_batch, self.rotate_s = journal, max_batch, rotate_s
        self.linger_s = linger_s if linger_s is not None else (0.25 if journal else 0.0)
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._committer: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._rotated_at = 0.0
        self._named = 0  # the last segment's number: names sort in the order written
        self.written = 0
        self.replayed = 0
        self.committer_restarts = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self.journal is None:
            self._thread = threading.Thread(target=self._run, name="kaon-meter", daemon=True)
            self._thread.start()
            return
        self.journal.mkdir(parents=True, exist_ok=True)
        self.replayed = replay(self.journal)
        self.written += self.replayed
        self._open_segment()
        self._start_committer()

    def _start_committer(self) -> None:
        self._committer = subprocess.Popen(
            [sys.executable, "-m", "kaon.platform.metercommit", str(self.journal),
             "--writer", str(os.getpid()), "--linger", str(self.linger_s)],
            preexec_fn=die_with_parent)

    def stop(self) -> None:
        """Commit what is queued or journaled (and drop the journal), then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=60)
            self._thread = None
        if self.journal is None:
            return
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if self._committer is not None:
            self._committer.terminate()  # a batch cut short rolls back; replay commits it
            try:
                self._committer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._committer.kill()
                self._committer.wait()
            self._committer = None
        self.written += replay(self.journal)

    def _open_segment(self) -> None:
        """A new segment, named ``<number>-<pid>.jsonl``: the committer takes a segment as
        complete once a later number of the same pid exists, so numbers only grow, even
        when the wall clock steps back."""
        assert self.journal is not None
        self._named = max(self._named + 1, time.time_ns())
        segment = self.journal / f"{self._named:020d}-{os.getpid()}.jsonl"
        self._fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
                if time.monotonic() - self._rotated_at >= self.rotate_s:
                    self._rotate()
                os.write(self._fd, line.encode() + b"\n")  # type: ignore[arg-type]
            return True
        loop = asyncio.get_running_loop()
        pending = _Pending(event, loop.create_future(), loop)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise UnavailableError("Usage metering is behind; the request was not served.",
                                   hint="Retry in a second.") from None
        return await pending.done

    def _rotate(self) -> None:
        """A new segment first: once it exists, every line of the old one is written, and
        the committer may delete the old one when it is through. Also the committer's
        watchdog: one that died (killed, out of memory) is started again."""
        old = self._fd
        self._open_segment()
        os.close(old)  # type: ignore[arg-type]
        if self._committer is not None and self._committer.poll() is not None:
            logger.warning("the usage committer exited (%s); starting it again",
                           self._committer.returncode)
            self.committer_restarts += 1
            self._start_committer()

    # -- the group-commit thread (no journal) ---------------------------------------------
    def _run(self) -> None:
        while True:
            batch: list[_Pending] = []
            item = self._queue.get()
            while item is not None:
                batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._commit(batch)
            if item is None:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        result: bool | BaseException = True
        try:
            if batch:
                with session_scope() as s:
                    self.written += metering.record_many(s, [p.event for p in batch])
        except Exception as exc:
            result = UnavailableError(f"Usage could not be recorded: {exc}",
                                      hint="Retry shortly.")
        for pending in batch:
            pending.loop.call_soon_threadsafe(_settle, pending.done, result)


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """Journal lines → events; a line cut short (by a crash: never acknowledged) is skipped."""
    events = []
    for line in data.splitlines():
        try:
            raw = json.loads(line)
            raw["occurred_at"] = datetime.fromisoformat(raw["occurred_at"])
        except (ValueError, KeyError, TypeError):
            continue
        events.append(raw)
    return events


def commit_events(events: list[dict[str, Any]], chunk: int = 5000) -> int:
    """Commit events in transactions of ``chunk``; returns how many were new."""
    new = 0
    for start in range(0, len(events), chunk):
        with session_scope() as s:
            new += metering.record_many(s, events[start:start + chunk])
    return new


def replay(journal: Path, chunk: int = 5000) -> int:
    """Commit the events of journal segments a crash left behind, then delete them.
    Events already in the database (same key) are skipped. Returns how many were new."""
    new = 0
    for segment in sorted(journal.glob("*.jsonl")):
        try:
            data = segment.read_bytes()
        except FileNotFoundError:  # a committer that outlived its writer got there first
            continue
        new += commit_events(parse_lines(data), chunk)
        segment.unlink(missing_ok=True)
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
