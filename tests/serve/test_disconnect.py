"""A client that leaves has its queued work dropped: a real uvicorn server, a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
import torch
import uvicorn

import kaon
from kaon.serve import RegistryPredictor, create_app, create_service_app
from kaon.serve.batching import BatchPolicy
from tests.registry.fixtures import register_tiny
from tests.serve.test_app import PREDICT, digit_image

pytestmark = pytest.mark.serial  # a client that leaves, on the clock: run alone (Makefile)


class SlowPredictor:
    """The registered model, 0.5 s per batch, remembering every batch it saw."""

    def __init__(self, inner: RegistryPredictor) -> None:
        self.inner, self.batches = inner, []  # type: ignore[var-annotated]
        self.name, self.version, self.signature = inner.name, inner.version, inner.signature

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        self.batches.append(images.clone())
        time.sleep(0.5)
        return self.inner.predict(images)


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """``app`` on a real uvicorn server in a thread; yields its URL once /readyz is 200."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        uv.should_exit = True
        thread.join(10)


@pytest.fixture
def server() -> Iterator[tuple[str, list[torch.Tensor]]]:
    register_tiny("digits")
    slow = SlowPredictor(RegistryPredictor.from_ref("digits:1"))
    app = create_app(lambda: slow, policy=BatchPolicy(max_batch_size=1, max_wait_ms=0))
    with running(app) as url:
        yield url, slow.batches


def _post_and_leave(url: str, path: str, body: bytes, stay: float = 0.1) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(stay)


def _dropped(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith("kaon_dropped_items ")))




@pytest.mark.parametrize("images", [1, 8], ids=["fast-path", "fastapi-route"])
def test_a_client_that_disconnects_has_its_queued_work_dropped(
        server: tuple[str, list[torch.Tensor]], images: int) -> None:
    url, batches = server
    before = _dropped(url)
    first = threading.Thread(target=lambda: httpx.post(
        f"{url}{PREDICT}", json={"inputs": [digit_image(0).tolist()]}, timeout=30))
    first.start()
    time.sleep(0.1)  # the first image is in the model
    leaving = digit_image(7)
    body_images = [leaving.tolist()] * images
    _post_and_leave(url, PREDICT, json.dumps({"inputs": body_images}).encode())  # queued
    first.join(30)
    after = httpx.post(f"{url}{PREDICT}", json={"inputs": [digit_image(1).tolist()]},
                       timeout=30)
    assert after.status_code == 200
    seen = torch.cat(batches)
    assert len(seen) == 2, f"the model ran {len(seen)} images; the leaver's should be dropped"
    assert not any(torch.equal(img[0], torch.from_numpy(leaving)) for img in seen)
    assert _dropped(url) - before == images


class Waiting(kaon.Service):
    """A slow async handler and a slow streaming one, recording how each ended."""

    ended: ClassVar[dict[str, str]] = {}

    @kaon.handler
    async def wait(self, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            Waiting.ended["wait"] = "cancelled"
            raise
        Waiting.ended["wait"] = "finished"
        return "done"

    @kaon.handler
    def ticks(self, n: int) -> Iterator[int]:
        try:
            for i in range(n):
                time.sleep(0.05)
                yield i
            Waiting.ended["ticks"] = "finished"
        finally:
            Waiting.ended.setdefault("ticks", "closed")


def _until(check: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_service_handler_whose_client_left_is_cancelled_without_a_crash() -> None:
    Waiting.ended.clear()
    errors = _Records()
    with running(create_service_app(Waiting())) as url:
        logging.getLogger("uvicorn.error").addHandler(errors)  # uvicorn's own, set up by now
        try:
            _post_and_leave(url, "/wait", b'{"seconds": 5}', stay=0.3)
            assert _until(lambda: "wait" in Waiting.ended), "the handler was never ended"
            assert Waiting.ended["wait"] == "cancelled"
            assert httpx.post(f"{url}/wait", json={"seconds": 0}).json() == "done"
        finally:
            logging.getLogger("uvicorn.error").removeHandler(errors)
    assert not [r.getMessage() for r in errors.records], "the server logged an error"


def test_a_stream_whose_client_left_closes_the_handlers_generator() -> None:
    Waiting.ended.clear()
    with running(create_service_app(Waiting())) as url:
        _post_and_leave(url, "/ticks", b'{"n": 1000}', stay=0.3)  # 50 s of ticks
        assert _until(lambda: "ticks" in Waiting.ended), "the generator was left open"
    assert Waiting.ended["ticks"] == "closed"
