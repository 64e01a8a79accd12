"""A closed-loop load generator measured the way Triton's perf_analyzer does.

For each concurrency level: warm up, then repeat fixed measurement windows until the last
three agree on throughput within ``stability`` (10%), and report those stable windows:
requests/s, p50 and p99 latency. Bounded: at most ``max_windows`` windows per level.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Level:
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    windows: int
    stable: bool


async def _window(client: httpx.AsyncClient, url: str, body: Any, concurrency: int,
                  seconds: float) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def user() -> None:
        nonlocal errors
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                response = await client.post(url, json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return len(latencies), latencies, errors


async def measure(url: str, body: Any, concurrencies: Sequence[int], window_s: float = 5.0,
                  warmup_s: float = 2.0, stability: float = 0.10,
                  max_windows: int = 10, headers: dict[str, str] | None = None) -> list[Level]:
    limits = httpx.Limits(max_connections=max(concurrencies) + 4)
    results = []
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:
        for c in concurrencies:
            await _window(client, url, body, c, warmup_s)
            windows: list[tuple[float, list[float], int]] = []
            stable = False
            while len(windows) < max_windows:
                done, lat, errors = await _window(client, url, body, c, window_s)
                windows.append((done / window_s, lat, errors))
                last = [w[0] for w in windows[-3:]]
                if len(last) == 3 and max(last) <= min(last) * (1 + stability):
                    stable = True
                    break
            chosen = windows[-3:]
            lat = sorted(x for w in chosen for x in w[1])
            results.append(Level(
                concurrency=c, requests_per_s=statistics.mean(w[0] for w in chosen),
                p50_ms=1000 * lat[len(lat) // 2] if lat else float("nan"),
                p99_ms=1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else
                float("nan"),
                errors=sum(w[2] for w in chosen), windows=len(windows), stable=stable))
    return results
