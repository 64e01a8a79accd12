"""Hard quotas are atomic: 64 threads racing for the last 10 units let exactly 10 through,
on SQLite and on PostgreSQL (real servers, real transactions)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kaon.platform import metering, quota
from kaon.platform.errors import QuotaExceeded
from kaon.platform.models import UsageEvent, Workspace
from kaon.platform.plans import get_catalog

NOW = datetime(2026, 11, 20, 8, tzinfo=timezone.utc)


@pytest.fixture
def ws(db: Session) -> str:
    db.add(Workspace(id="ws-bbbbbbbbbbbb", name="b"))
    db.commit()
    return "ws-bbbbbbbbbbbb"


def test_64_threads_race_for_the_last_10_units(sessions: Callable[[], Session], ws: str) -> None:
    free = get_catalog().get("free")
    limit = free.included_inference_requests
    with sessions() as s:
        metering.record(s, ws, "inference_requests", limit - 10, "warm-up", None, NOW)
        s.commit()
    allowed, refused, errors = [], [], []
    barrier = threading.Barrier(64)

    def call(i: int) -> None:
        barrier.wait()
        try:
            with sessions() as s:
                quota.check_and_consume(s, ws, "inference_requests", 1, free,
                                        event_key=f"race-{i}", now=NOW)
                s.commit()
            allowed.append(i)
        except QuotaExceeded:
            refused.append(i)
        except BaseException as exc:  # pragma: no cover - reported by the assert
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (len(allowed), len(refused)) == (10, 54)
    with sessions() as s:
        assert metering.usage(s, ws, "2026-11")["inference_requests"] == limit
        assert s.scalar(select(func.count()).select_from(UsageEvent)) == 11


def test_over_quota_says_plan_metric_limit_used_and_reset(db: Session, ws: str) -> None:
    free = get_catalog().get("free")
    limit = free.included_training_seconds
    assert quota.check_and_consume(db, ws, "training_seconds", limit - 1, free,
                                   event_key="a", now=NOW)
    with pytest.raises(QuotaExceeded) as err:
        quota.check_and_consume(db, ws, "training_seconds", 2, free, event_key="b", now=NOW)
    assert err.value.http_status == 429
    assert err.value.to_dict() | {"message": "", "hint": ""} == {
        "error": "QuotaExceeded", "message": "", "hint": "", "plan": "free",
        "metric": "training_seconds", "limit": limit, "used": limit - 1,
        "reset_at": "2026-12-01T00:00:00+00:00"}
    assert quota.check_and_consume(db, ws, "training_seconds", 1, free, event_key="c", now=NOW)
    assert quota.remaining(db, ws, "training_seconds", free, NOW) == 0
    with pytest.raises(QuotaExceeded):
        quota.check(db, ws, "training_seconds", free, NOW)
    # a replayed event is neither refused nor counted again
    assert not quota.check_and_consume(db, ws, "training_seconds", 1, free, event_key="c",
                                       now=NOW)
    db.commit()
    assert metering.usage(db, ws, "2026-11")["training_seconds"] == limit


def test_paid_plans_are_never_refused_and_the_overage_is_counted(db: Session, ws: str) -> None:
    pro = get_catalog().get("pro")
    big = pro.included_inference_requests + 5
    assert quota.check_and_consume(db, ws, "inference_requests", big, pro, event_key="x",
                                   now=NOW)
    assert quota.remaining(db, ws, "inference_requests", pro, NOW) is None
    usage = quota.period_usage(db, ws, "2026-11", pro)
    assert usage["inference_requests"] == {"used": big, "included": big - 5, "overage": 5,
                                           "counted": big, "shared_with": None}


def test_a_new_month_starts_from_zero(db: Session, ws: str) -> None:
    free = get_catalog().get("free")
    limit = free.included_inference_requests
    quota.check_and_consume(db, ws, "inference_requests", limit, free, event_key="n", now=NOW)
    with pytest.raises(QuotaExceeded):
        quota.check_and_consume(db, ws, "inference_requests", 1, free, event_key="o", now=NOW)
    december = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert quota.check_and_consume(db, ws, "inference_requests", 1, free, event_key="p",
                                   now=december)


def test_without_an_event_key_every_call_counts(db: Session, ws: str) -> None:
    free = get_catalog().get("free")
    assert quota.check_and_consume(db, ws, "inference_requests", 2, free, now=NOW)
    assert quota.check_and_consume(db, ws, "inference_requests", 2, free, now=NOW)
    db.commit()
    assert metering.usage(db, ws, "2026-11")["inference_requests"] == 4
    assert db.scalar(select(func.count()).select_from(UsageEvent)) == 2


def test_stream_frames_draw_on_the_included_inference_requests(db: Session, ws: str) -> None:
    """A frame is an inference: frames and requests share one hard cap, and each is refused
    once the two together reach it (before, frames were never capped)."""
    free = get_catalog().get("free")
    limit = free.included_inference_requests
    metering.record(db, ws, "stream_frames", limit - 2, "frames", None, NOW)
    db.commit()
    assert quota.limit_for(free, "stream_frames") == limit
    assert quota.remaining(db, ws, "stream_frames", free, NOW) == 2
    assert quota.remaining(db, ws, "inference_requests", free, NOW) == 2
    for i in range(2):
        assert quota.check_and_consume(db, ws, "inference_requests", 1, free,
                                       event_key=f"r{i}", now=NOW)
    with pytest.raises(QuotaExceeded) as refused:
        quota.check_and_consume(db, ws, "inference_requests", 1, free, event_key="r2", now=NOW)
    assert (refused.value.metric, refused.value.used, refused.value.limit) == (
        "inference_requests", limit, limit)
    with pytest.raises(QuotaExceeded) as at_open:  # what the gateway asks of a stream
        quota.check(db, ws, "stream_frames", free, NOW)
    assert at_open.value.metric == "inference_requests"
    usage = quota.period_usage(db, ws, "2026-11", free)  # the usage report says so
    assert usage["inference_requests"] == {"used": 2, "included": limit, "counted": limit,
                                           "shared_with": None, "overage": 0}
    assert usage["stream_frames"] == {"used": limit - 2, "included": None,
                                      "counted": limit - 2,
                                      "shared_with": "inference_requests", "overage": 0}
