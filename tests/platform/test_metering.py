"""Metering on SQLite and PostgreSQL: events and counters move together, never twice."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kaon.errors import ConfigError
from kaon.platform import metering
from kaon.platform.models import UsageEvent, Workspace

NOV = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)
DEC = datetime(2026, 12, 1, 0, 0, 1, tzinfo=timezone.utc)


@pytest.fixture
def ws(db: Session) -> str:
    db.add(Workspace(id="ws-aaaaaaaaaaaa", name="a"))
    db.commit()
    return "ws-aaaaaaaaaaaa"


def test_a_duplicate_event_key_is_not_counted_twice(db: Session, ws: str) -> None:
    assert metering.record(db, ws, "inference_requests", 5, "req-1", {"key": "k"}, NOV)
    assert not metering.record(db, ws, "inference_requests", 5, "req-1", {"key": "k"}, NOV)
    db.commit()
    assert not metering.record(db, ws, "inference_requests", 7, "req-1", None, NOV)
    assert metering.record(db, ws, "training_seconds", 30, "job-1", None, NOV)
    assert metering.record(db, ws, "inference_requests", 1, "req-2", None, DEC)
    db.commit()
    assert metering.usage(db, ws, "2026-11") == {
        "inference_requests": 5, "stream_frames": 0, "training_seconds": 30, "storage_bytes": 0}
    assert metering.usage(db, ws, "2026-12")["inference_requests"] == 1


def test_bad_events_are_refused(db: Session, ws: str) -> None:
    for metric, qty, key in [("gpu_hours", 1, "a"), ("inference_requests", -1, "b"),
                             ("inference_requests", 1.5, "c"), ("inference_requests", True, "d"),
                             ("inference_requests", 1, ""), ("inference_requests", 1, "k" * 129)]:
        with pytest.raises(ConfigError):
            metering.record(db, ws, metric, qty, key)  # type: ignore[arg-type]


def test_record_many_skips_known_keys_and_counts_per_month(db: Session, ws: str) -> None:
    metering.record(db, ws, "inference_requests", 1, "e-0", None, NOV)
    events = [{"workspace_id": ws, "metric": "inference_requests", "quantity": 1,
               "event_key": f"e-{i}", "occurred_at": NOV} for i in range(100)]
    events += [{"workspace_id": ws, "metric": "stream_frames", "quantity": 3,
                "event_key": f"f-{i}", "occurred_at": DEC, "source": {"route": "/ws"}}
               for i in range(10)]
    events.append(dict(events[5]))  # the same key twice in one batch
    assert metering.record_many(db, events) == 109
    assert metering.record_many(db, events) == 0
    assert metering.record_many(db, []) == 0
    db.commit()
    assert metering.usage(db, ws, "2026-11")["inference_requests"] == 100
    assert metering.usage(db, ws, "2026-12")["stream_frames"] == 30


def test_concurrent_writers_of_the_same_events_count_each_once(
        sessions: Callable[[], Session], ws: str) -> None:
    events = [{"workspace_id": ws, "metric": "inference_requests", "quantity": 2,
               "event_key": f"c-{i}", "occurred_at": NOV} for i in range(200)]
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            with sessions() as s:
                metering.record_many(s, events[offset:] + events[:offset])
                s.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i * 25,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(UsageEvent)) == 200
        assert metering.usage(s, ws, "2026-11")["inference_requests"] == 400
    assert errors == []  # keys are written in order: no deadlock between overlapping batches


def test_record_many_counts_a_large_batch_once(db: Session, ws: str) -> None:
    """10,000 events in one call (throughput itself: bench/usage_events.py)."""
    events = [{"workspace_id": ws, "metric": "inference_requests", "quantity": 1,
               "event_key": f"big-{i}", "source": {"key": "key-0123456789ab"}}
              for i in range(10_000)]
    assert metering.record_many(db, events) == 10_000
    assert metering.record_many(db, events[:100]) == 0  # replayed: nothing counted twice
    db.commit()
    period = metering.make_event(ws, "inference_requests", 1, "x", None, None)[
        "occurred_at"].strftime("%Y-%m")
    assert metering.usage(db, ws, period)["inference_requests"] == 10_000
