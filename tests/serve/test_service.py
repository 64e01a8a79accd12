"""Services written as classes: setup once, typed endpoints, batching, streaming, errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import kaon
from kaon.errors import ConfigError
from kaon.serve import create_service_app
from kaon.serve.batching import BatchPolicy
from kaon.serve.service import load_service

ECHO = Path(__file__).resolve().parents[2] / "examples" / "services" / "echo.py"


def ready(client: TestClient) -> TestClient:
    deadline = time.monotonic() + 10
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return client


def _shout_concurrently(service: kaon.Service) -> list[str]:
    """Eight concurrent POST /shout calls, one text each; their answers in order."""
    with TestClient(create_service_app(service)) as client:
        ready(client)
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(
                lambda i: client.post("/shout", json={"texts": f"t{i}"}).json(), range(8)))


@pytest.fixture
def echo() -> Iterator[TestClient]:
    with TestClient(create_service_app(load_service(f"{ECHO}:Echo"))) as client:
        yield ready(client)


def test_a_handler_is_a_typed_endpoint_in_openapi(echo: TestClient) -> None:
    assert echo.post("/say", json={"text": "hi", "times": 2}).json() == {
        "lines": ["echo: hi", "echo: hi"]}
    schema = echo.get("/openapi.json").json()
    assert "/say" in schema["paths"] and "/shout" in schema["paths"]
    request = schema["components"]["schemas"]["Echo_say_Request"]
    assert request["properties"]["times"]["default"] == 1
    # a streaming handler is documented as the event stream it is, and errors as Kaon's
    streamed = schema["paths"]["/count"]["post"]["responses"]
    assert list(streamed["200"]["content"]) == ["text/event-stream"]
    assert {"422", "500", "503", "504"} <= set(schema["paths"]["/say"]["post"]["responses"])


def test_a_bad_request_is_a_422_naming_the_field(echo: TestClient) -> None:
    response = echo.post("/say", json={"text": "hi", "times": "many"})
    assert response.status_code == 422 and "times" in response.text
    assert echo.post("/say", json={"text": "hi", "extra": 1}).status_code == 422


def test_a_batched_handler_receives_concurrent_requests_as_one_list() -> None:
    sizes: list[int] = []

    class Upper(kaon.Service):
        @kaon.handler(batch=kaon.Batch(max_batch_size=8, max_wait_ms=2_000))
        def shout(self, texts: list[str]) -> list[str]:
            time.sleep(0.05)  # the requests that arrive meanwhile make the next batch
            sizes.append(len(texts))
            return [t.upper() for t in texts]

    assert _shout_concurrently(Upper()) == [f"T{i}" for i in range(8)]
    assert max(sizes) > 1 and sum(sizes) == 8


def test_a_call_to_an_unbatched_handler_does_not_hold_back_batches() -> None:
    """A plain handler's request goes to no batcher: while one runs, a batched handler's
    lone request still runs at once instead of waiting out its window for it."""
    class Mixed(kaon.Service):
        @kaon.handler(batch=kaon.Batch(max_batch_size=8, max_wait_ms=20_000))
        def shout(self, texts: list[str]) -> list[str]:
            return [t.upper() for t in texts]

        @kaon.handler
        def nap(self, seconds: float) -> str:
            napping_now.set()
            time.sleep(seconds)
            return "rested"

    napping_now = threading.Event()
    with TestClient(create_service_app(Mixed())) as client, ThreadPoolExecutor(1) as pool:
        ready(client)
        napping = pool.submit(client.post, "/nap", json={"seconds": 3})
        assert napping_now.wait(30)  # the nap runs
        started = time.monotonic()
        assert client.post("/shout", json={"texts": "hi"}).json() == "HI"
        assert time.monotonic() - started < 10  # far below the 20 s window
        assert napping.result().json() == "rested"


def test_a_generator_handler_streams_server_sent_events(echo: TestClient) -> None:
    with echo.stream("POST", "/count", json={"n": 3}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert [json.loads(e[5:]) for e in events[:3]] == [0, 1, 2]


class Failing(kaon.Service):
    @kaon.handler
    def boom(self, n: int):  # type: ignore[no-untyped-def]
        yield from range(n)
        raise RuntimeError("secret detail")

    @kaon.handler
    def nan(self):  # type: ignore[no-untyped-def]
        yield 1.0
        yield float("nan")


def _events(client: TestClient, path: str, body: dict[str, int]) -> list[tuple[str, str]]:
    """(event, data) pairs of a Server-Sent Events response."""
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200  # sent with the headers, before the handler ran
        text = "".join(response.iter_text())
    pairs = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        pairs.append((fields.get("event", "message"), fields["data"]))
    return pairs


@pytest.mark.parametrize("n", [0, 2])
def test_a_streaming_handler_that_fails_ends_with_an_error_event(n: int) -> None:
    with TestClient(create_service_app(Failing())) as client:
        events = _events(ready(client), "/boom", {"n": n})
    assert [json.loads(data) for _, data in events[:-1]] == list(range(n))
    kind, data = events[-1]
    error = json.loads(data)
    assert kind == "error" and error["error"] == "InternalError"
    assert "RuntimeError" in error["message"] and "secret detail" not in data
    assert error["hint"]


def test_a_streamed_nan_is_an_error_event_not_invalid_json() -> None:
    with TestClient(create_service_app(Failing())) as client:
        events = _events(ready(client), "/nan", {})
    assert events[0] == ("message", "1.0")
    assert events[1][0] == "error" and "not JSON" in json.loads(events[1][1])["message"]


def test_setup_runs_once_before_requests_are_served() -> None:
    gate, calls = threading.Event(), []

    class Slow(kaon.Service):
        def setup(self) -> None:
            calls.append(1)
            gate.wait(5)

        @kaon.handler
        def ping(self) -> str:
            return "pong"

    with TestClient(create_service_app(Slow())) as client:
        assert client.get("/readyz").status_code == 503
        assert client.post("/ping", json={}).status_code == 503
        gate.set()
        ready(client)
        assert client.post("/ping", json={}).json() == "pong"
        assert client.post("/ping", json={}).json() == "pong"
    assert calls == [1]


def test_a_setup_that_fails_is_logged_and_answered_as_final(
        caplog: pytest.LogCaptureFixture) -> None:
    """Not "poll /readyz" with a Retry-After, for a state that will never change; and the
    traceback in the log (before, nothing was logged)."""
    import logging

    class Broken(kaon.Service):
        def setup(self) -> None:
            raise RuntimeError("weights missing at /x")

        @kaon.handler
        def ping(self) -> str:
            return "pong"

    with caplog.at_level(logging.ERROR, logger="kaon.serve"), \
            TestClient(create_service_app(Broken())) as client:
        deadline = time.monotonic() + 10
        while "weights missing" not in client.get("/readyz").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = client.post("/ping", json={})
    assert refused.status_code == 503 and "retry-after" not in refused.headers
    assert refused.json()["message"] == "The service is not ready: setup() failed: RuntimeError."
    assert "will not become ready" in refused.json()["hint"]
    assert any("setup() of Broken failed" in r.getMessage() and r.exc_info
               for r in caplog.records)


def test_a_handler_that_raises_is_a_500_that_names_the_handler_not_the_server() -> None:
    class Failing(kaon.Service):
        @kaon.handler
        def fail(self, a: int) -> int:
            raise ValueError("secret detail")

    with TestClient(create_service_app(Failing()), raise_server_exceptions=False) as client:
        response = ready(client).post("/fail", json={"a": 1})
    assert response.status_code == 500
    assert response.json()["message"] == "The handler failed on this request: ValueError."
    assert "secret detail" not in response.text and "bug in the server" not in response.text


def test_a_handler_annotated_bytes_answers_them_as_they_are() -> None:
    """-> bytes is application/octet-stream: bytes that are not UTF-8 (an image, a file)
    could not be a JSON string, and were a 500."""
    class Blobs(kaon.Service):
        @kaon.handler
        def png(self, n: int) -> bytes:
            return b"\x89PNG" + bytes([0xFF, n])

        @kaon.handler(batch=kaon.Batch(max_batch_size=4, max_wait_ms=20))
        def each(self, ns: list[int]) -> list[bytes]:
            return [bytes([0xFE, n]) for n in ns]

        @kaon.handler
        def wrong(self, n: int) -> bytes:
            return "text"  # type: ignore[return-value]

    with TestClient(create_service_app(Blobs()), raise_server_exceptions=False) as client:
        ready(client)
        png = client.post("/png", json={"n": 7})
        assert png.status_code == 200 and png.content == b"\x89PNG\xff\x07"
        assert png.headers["content-type"] == "application/octet-stream"
        with ThreadPoolExecutor(4) as pool:
            each = list(pool.map(lambda n: client.post("/each", json={"ns": n}), range(4)))
        assert [r.content for r in each] == [bytes([0xFE, n]) for n in range(4)]
        wrong = client.post("/wrong", json={"n": 1})
        assert wrong.status_code == 500 and wrong.json()["error"] == "InternalError"
        schema = client.get("/openapi.json").json()["paths"]["/png"]["post"]["responses"]
        assert list(schema["200"]["content"]) == ["application/octet-stream"]


def test_handlers_need_type_hints_and_a_service_needs_handlers() -> None:
    class Untyped(kaon.Service):
        @kaon.handler
        def f(self, x):  # type: ignore[no-untyped-def]
            return x

    with pytest.raises(ConfigError, match="no type hint"):
        create_service_app(Untyped())
    with pytest.raises(ConfigError, match=r"no @kaon\.handler"):
        create_service_app(kaon.Service())


def test_signatures_json_cannot_call_are_refused_when_the_app_is_built() -> None:
    class PositionalOnly(kaon.Service):
        @kaon.handler
        async def f(self, x: int, /) -> int:
            return x

    class VarArgs(kaon.Service):
        @kaon.handler
        def f(self, *xs: int) -> int:
            return sum(xs)

    class Private(kaon.Service):
        @kaon.handler
        def f(self, _x: int) -> int:
            return _x

    class Reserved(kaon.Service):
        @kaon.handler
        def f(self, model_config: int) -> int:
            return model_config

    for service, match in ((PositionalOnly(), "cannot come from a JSON field"),
                           (VarArgs(), "cannot come from a JSON field"),
                           (Private(), "reserved"), (Reserved(), "reserved")):
        with pytest.raises(ConfigError, match=match):
            create_service_app(service)


def test_paths_are_normalised_and_must_be_distinct() -> None:
    class Paths(kaon.Service):
        @kaon.handler(path="/hello/")
        def hi(self) -> str:
            return "hi"

    with TestClient(create_service_app(Paths())) as client:
        ready(client)
        assert client.post("/hello").json() == "hi"  # no body: every field has a default
        assert client.post("/hello", json={}).json() == "hi"

    class Twice(kaon.Service):
        @kaon.handler(path="same")
        def a(self) -> str:
            return "a"

        @kaon.handler(path="same")
        def b(self) -> str:
            return "b"

    with pytest.raises(ConfigError, match="both serve /same"):
        create_service_app(Twice())
    with pytest.raises(ConfigError, match="names no route"):
        kaon.handler(path="/")
    with pytest.raises(ConfigError, match="is on a staticmethod"):
        class Static(kaon.Service):
            @kaon.handler
            @staticmethod
            def ping() -> str:
                return "pong"
    # a template would match other handlers' paths (and its parameter would be dropped)
    for odd in ("{rest:path}", "items/{id}", "two words", "a?b", "a#b", "a//b"):
        with pytest.raises(ConfigError, match="is not a plain path"):
            kaon.handler(path=odd)
    assert kaon.handler(path="/v1/say-hello.json/")  # fine: slashes trimmed


def test_a_type_json_cannot_carry_is_refused_naming_the_handler() -> None:
    class Returns(kaon.Service):
        @kaon.handler
        def arr(self, n: int) -> np.ndarray:
            return np.zeros(n)

    class Takes(kaon.Service):
        @kaon.handler
        def arr(self, x: np.ndarray) -> int:
            return 1

    with pytest.raises(ConfigError, match="Handler arr: its return type cannot be sent as JSON"):
        create_service_app(Returns())
    with pytest.raises(ConfigError, match="Handler arr: a parameter's type cannot come from"):
        create_service_app(Takes())


def test_a_service_class_that_needs_arguments_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "needs.py"
    source.write_text("import kaon\n\nclass Needs(kaon.Service):\n"
                      "    def __init__(self, size: int) -> None:\n        self.size = size\n\n"
                      "    @kaon.handler\n    def ping(self) -> str:\n        return 'pong'\n")
    with pytest.raises(ConfigError, match=r"Needs\(\) needs arguments \(size: int\)"):
        load_service(f"{source}:Needs")


def test_a_bad_target_names_the_expected_form(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"FILE\.py:ClassName"):
        load_service("nowhere.py:Echo")
    with pytest.raises(ConfigError, match=r"no kaon\.Service subclass"):
        load_service(f"{ECHO}:Nope")


def test_an_async_handler_is_awaited_on_the_event_loop() -> None:
    class Greeter(kaon.Service):
        @kaon.handler
        async def greet(self, name: str) -> dict[str, str]:
            await asyncio.sleep(0)
            return {"hello": name}

    with TestClient(create_service_app(Greeter())) as client:
        response = ready(client).post("/greet", json={"name": "ada"})
    assert response.status_code == 200 and response.json() == {"hello": "ada"}


def test_an_async_generator_streams_and_gives_its_slot_back() -> None:
    class Ticker(kaon.Service):
        @kaon.handler
        async def tick(self, n: int) -> AsyncIterator[int]:
            for i in range(n):
                await asyncio.sleep(0)
                yield i

    service, policy = Ticker(), BatchPolicy(max_queue=1)
    with TestClient(create_service_app(service, policy=policy)) as client:
        ready(client)
        for n in (3, 2):  # a bound of one: the second stream needs the first one's slot back
            with client.stream("POST", "/tick", json={"n": n}) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = list(response.iter_lines())
            events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
            assert events[:n] == list(range(n)) and "event: end" in lines


def test_an_async_batched_handler_receives_concurrent_requests_as_one_list() -> None:
    sizes: list[int] = []

    class Upper(kaon.Service):
        @kaon.handler(batch=kaon.Batch(max_batch_size=8, max_wait_ms=2_000))
        async def shout(self, texts: list[str]) -> list[str]:
            await asyncio.sleep(0.05)  # the requests that arrive meanwhile make the next batch
            sizes.append(len(texts))
            return [t.upper() for t in texts]

    assert _shout_concurrently(Upper()) == [f"T{i}" for i in range(8)]
    assert max(sizes) > 1 and sum(sizes) == 8


@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_slow_handler_answers_504_after_the_configured_timeout(kind: str) -> None:
    gate = threading.Event()

    class Slow(kaon.Service):
        @kaon.handler
        def blocking(self) -> str:
            gate.wait(10)
            return "late"

        @kaon.handler
        async def waiting(self) -> str:
            await asyncio.sleep(10)
            return "late"

    service, policy = Slow(), BatchPolicy(timeout_s=0.2)
    try:
        with TestClient(create_service_app(service, policy=policy)) as client:
            path = "/blocking" if kind == "def" else "/waiting"
            response = ready(client).post(path, json={})
            gate.set()  # let the abandoned thread finish before the server stops
    finally:
        gate.set()
    assert response.status_code == 504
    body = response.json()
    assert body["error"] == "RequestTimeout" and "within 0.2s" in body["message"]
    assert "--timeout" in body["hint"]


def test_past_the_bound_a_handler_answers_503_with_retry_after() -> None:
    entered, gate = threading.Event(), threading.Event()

    class Busy(kaon.Service):
        @kaon.handler
        def work(self) -> str:
            entered.set()
            gate.wait(10)
            return "done"

    service, policy = Busy(), BatchPolicy(max_queue=1)
    try:
        with TestClient(create_service_app(service, policy=policy)) as client, \
                ThreadPoolExecutor(1) as pool:
            ready(client)
            first = pool.submit(client.post, "/work", json={})
            assert entered.wait(10)  # the one slot is taken
            refused = client.post("/work", json={})
            gate.set()
            assert first.result().json() == "done"
            again = client.post("/work", json={})  # the slot came back with the answer
            metrics = client.get("/metrics").text
    finally:
        gate.set()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "Overloaded"
    assert again.status_code == 200 and again.json() == "done"
    assert "kaon_rejected_total 1.0" in metrics


def test_a_bad_batch_setting_and_a_streaming_batch_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_batch_size"):
        kaon.Batch(max_batch_size=0)

    class Streams(kaon.Service):
        @kaon.handler(batch=kaon.Batch())
        def each(self, xs: list[int]) -> Iterator[int]:
            yield from xs

    with pytest.raises(ConfigError, match="cannot stream"):
        create_service_app(Streams())
