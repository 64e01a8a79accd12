"""Per-key token buckets: ``rate`` tokens a second up to ``capacity`` (the plan's burst).

In-process and thread-safe; each server process limits on its own. The clock is injectable
so tests need not sleep.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from kaon.platform.errors import RateLimited
from kaon.platform.plans import Plan

Clock = Callable[[], float]


class TokenBucket:
    """``take()`` returns 0.0 when allowed, else the seconds until it would be."""

    def __init__(self, rate: float, capacity: float, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs rate > 0 and capacity >= 1")
        self.rate, self.capacity, self._clock = float(rate), float(capacity), clock
        self._tokens, self._at = float(capacity), clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def resize(self, rate: float, capacity: float) -> None:
        """New limits (a plan change) that keep the tokens held, up to the new capacity: a
        change of plan neither refills the burst nor takes it away."""
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs rate > 0 and capacity >= 1")
        with self._lock:
            self._refill()
            self.rate, self.capacity = float(rate), float(capacity)
            self._tokens = min(self._tokens, self.capacity)

    def take(self, n: float = 1.0) -> float:
        if n > self.capacity:
            raise ValueError(f"cannot take {n} tokens from a bucket of {self.capacity:g}")
        with self._lock:
            self._refill()
            if self._tokens >= n:
                self._tokens -= n
                return 0.0
            return (n - self._tokens) / self.rate


def retry_after(wait: float) -> int:
    """Seconds for a ``Retry-After`` header: whole, rounded up, at least 1."""
    return max(1, math.ceil(wait))


class RateLimiter:
    """One bucket per key, sized by the key's plan (resized when the plan's limits change,
    keeping its tokens).

    Keeps at most ``max_keys`` buckets, forgetting the least recently used.
    """

    def __init__(self, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock, self._max = clock, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, rate: float, burst: int, n: float = 1.0) -> float:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(rate, burst, self._clock)
            elif (bucket.rate, bucket.capacity) != (float(rate), float(burst)):
                bucket.resize(rate, burst)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return bucket.take(n)

    def check(self, key: str, plan: Plan, n: float = 1.0) -> None:
        """Raise :class:`RateLimited` (429, with the Retry-After seconds) when over the rate."""
        wait = self.take(key, plan.rate_limit_rps, plan.burst, n)
        if wait > 0:
            raise RateLimited(retry_after(wait))
