"""The gateway in process: its key and plan cache (one load per key however many requests
miss at once; a full cache evicts its stalest entry; refused keys are kept apart from valid
ones), and a stream refused while the database is unreachable."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

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
        cache = _TTLCache(seconds=1.0)
        callers = [asyncio.ensure_future(cache.get("k", load)) for _ in range(16)]
        await asyncio.sleep(0.05)
        gate.set()
        values = await asyncio.gather(*callers)
        cached = await cache.get("k", load)
        await asyncio.sleep(1.1)
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


def test_a_full_cache_evicts_its_stalest_entry_not_every_entry() -> None:
    """A full store drops its stalest entry, one at a time, never the whole store."""
    loads: list[str] = []

    def loader(key: str) -> Callable[[], str]:
        def load() -> str:
            loads.append(key)
            return key
        return load

    async def scenario() -> list[str]:
        cache = _TTLCache(seconds=60, size=3)
        for key in ("a", "b", "c", "a", "d", "b", "c", "a"):
            await cache.get(key, loader(key))
        return loads

    # d evicts a (the stalest) alone; b and c stay cached; a's return evicts b
    assert asyncio.run(scenario()) == ["a", "b", "c", "d", "a"]


def test_a_flood_of_refused_keys_never_evicts_a_valid_key() -> None:
    """Refusals (a load that returns the error) have a store of their own: unknown keys
    evict each other, while the valid keys stay cached."""
    loads: list[str] = []

    def loader(key: str) -> Callable[[], object]:
        def load() -> object:
            loads.append(key)
            return LookupError(f"no key {key}") if key.startswith("bad") else key
        return load

    async def scenario() -> list[object]:
        cache = _TTLCache(seconds=60, size=2)
        for key in ("a", "b", *(f"bad{i}" for i in range(5))):
            await cache.get(key, loader(key))
        return [await cache.get(key, loader(key)) for key in ("a", "b", "bad4", "bad0")]

    found = asyncio.run(scenario())
    assert found[:2] == ["a", "b"] and isinstance(found[2], LookupError)
    # a and b were never loaded again; bad4 (recent) was cached, bad0 (evicted) was reloaded
    assert loads == ["a", "b", *(f"bad{i}" for i in range(5)), "bad0"]


def test_a_stream_opened_while_the_database_is_unreachable_is_refused_with_503(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a traceback and a failed handshake: the HTTP routes' 503 and body, as the
    handshake's answer."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse

    from kaon.config import reset_settings
    from kaon.platform.deployrt import DeploymentRuntime
    from kaon.platform.gateway import Gateway
    from kaon.platform.meterlog import MeterWriter

    # nothing listens on port 1: every connection is refused (SQLAlchemy's OperationalError)
    monkeypatch.setenv("KAON_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    reset_settings()
    app = FastAPI()
    app.include_router(Gateway(DeploymentRuntime(), MeterWriter()).router())
    key = "kaon_0123456789ab_" + "x" * 43  # well formed: the gateway must ask the database
    with TestClient(app) as client, pytest.raises(WebSocketDenialResponse) as refused, \
            client.websocket_connect("/d/cam/v1/models/m/stream",
                                     headers={"Authorization": f"Bearer {key}"}):
        pass
    assert refused.value.status_code == 503
    assert refused.value.json()["message"] == "The database is busy or unreachable."
