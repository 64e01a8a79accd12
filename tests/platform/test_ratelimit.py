"""Token buckets: burst, refill, Retry-After; thread-safe; a fake clock, no sleeping."""

from __future__ import annotations

import threading

import pytest

from kaon.platform.errors import RateLimited
from kaon.platform.plans import get_catalog
from kaon.platform.ratelimit import RateLimiter, TokenBucket, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, capacity=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 100
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.5)  # capped at capacity
    with pytest.raises(ValueError):
        bucket.take(4)


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.01) == 1
    assert retry_after(1.0) == 1
    assert retry_after(1.2) == 2


def test_the_limiter_uses_the_plan_and_raises_429_with_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    free = get_catalog().get("free")
    for _ in range(free.burst):
        limiter.check("key-1", free)
    with pytest.raises(RateLimited) as err:
        limiter.check("key-1", free)
    assert err.value.http_status == 429 and err.value.retry_after == 1
    limiter.check("key-2", free)  # another key has its own bucket
    clock.now += 1 / free.rate_limit_rps
    limiter.check("key-1", free)
    # a plan change resizes the bucket: it keeps its tokens (free's full burst here), then
    # refills at the new rate, up to the new burst
    pro = get_catalog().get("pro")
    clock.now += 100
    for _ in range(free.burst):
        limiter.check("key-1", pro)
    with pytest.raises(RateLimited):
        limiter.check("key-1", pro)
    clock.now += pro.burst / pro.rate_limit_rps
    for _ in range(pro.burst):
        limiter.check("key-1", pro)


def test_flipping_plans_does_not_refill_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    free, pro = get_catalog().get("free"), get_catalog().get("pro")
    for _ in range(pro.burst):
        limiter.check("key-1", pro)
    with pytest.raises(RateLimited):  # emptied on pro; a change of plan brings nothing back
        limiter.check("key-1", free)
    with pytest.raises(RateLimited):
        limiter.check("key-1", pro)
    clock.now += 3 / pro.rate_limit_rps  # refilled at the plan's rate, 3 tokens on pro
    limiter.check("key-1", free)  # and kept through the change (3 ≤ free's burst of 10)
    clock.now += 100
    limiter.check("key-1", free)  # full on free: 10 tokens, not pro's 100
    for _ in range(free.burst - 1):
        limiter.check("key-1", pro)
    with pytest.raises(RateLimited):
        limiter.check("key-1", pro)


def test_concurrent_takers_never_exceed_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, capacity=50, clock=clock)
    granted = []

    def take() -> None:
        for _ in range(20):
            if bucket.take() == 0.0:
                granted.append(1)

    threads = [threading.Thread(target=take) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50


def test_the_limiter_forgets_the_least_recently_used_keys() -> None:
    limiter = RateLimiter(clock=Clock(), max_keys=2)
    for key in ["a", "b", "c"]:
        limiter.take(key, 1.0, 1)
    assert limiter.take("a", 1.0, 1) == 0.0  # "a" was forgotten: a fresh, full bucket
