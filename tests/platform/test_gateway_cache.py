"""The gateway's key and plan cache: one load per key however many requests miss at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kaon.platform.gateway import _TTLCache


def test_concurrent_misses_load_once_and_the_value_expires() -> None:
    calls = 0
    gate = threading.Event()

    def load() -> str:
        nonlocal calls
        calls += 1
        gate.wait(5)  # every caller arrives while the first load is still running
        return f"value-{calls}"

    async def scenario() -> tuple[list[str], str, str]:
        cache = _TTLCache(seconds=0.2)
        callers = [asyncio.ensure_future(cache.get("k", load)) for _ in range(16)]
        await asyncio.sleep(0.05)
        gate.set()
        values = await asyncio.gather(*callers)
        cached = await cache.get("k", load)
        await asyncio.sleep(0.25)
        return values, cached, await cache.get("k", load)

    values, cached, expired = asyncio.run(scenario())
    assert values == ["value-1"] * 16 and cached == "value-1"
    assert expired == "value-2" and calls == 2


def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    calls = 0

    def load() -> str:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        if calls == 1:
            raise RuntimeError("database down")
        return "ok"

    async def scenario() -> tuple[list[BaseException | str], str]:
        cache = _TTLCache(seconds=10)
        first = await asyncio.gather(*(cache.get("k", load) for _ in range(4)),
                                     return_exceptions=True)
        return first, await cache.get("k", load)

    first, after = asyncio.run(scenario())
    assert all(isinstance(e, RuntimeError) for e in first) and after == "ok" and calls == 2


def test_a_caller_that_goes_away_does_not_cancel_the_load_for_the_others() -> None:
    def load() -> str:
        time.sleep(0.1)
        return "ok"

    async def scenario() -> str:
        cache = _TTLCache(seconds=10)
        leaver = asyncio.ensure_future(cache.get("k", load))
        stayer = asyncio.ensure_future(cache.get("k", load))
        await asyncio.sleep(0.02)
        leaver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaver
        return await stayer

    assert asyncio.run(scenario()) == "ok"
