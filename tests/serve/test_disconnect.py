"""A client that leaves has its queued work dropped: a real uvicorn server, a real socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch
import uvicorn

from kaon.serve import RegistryPredictor, create_app
from kaon.serve.batching import BatchPolicy
from tests.registry.fixtures import register_tiny
from tests.serve.test_app import PREDICT, digit_image


class SlowPredictor:
    """The registered model, 0.5 s per batch, remembering every batch it saw."""

    def __init__(self, inner: RegistryPredictor) -> None:
        self.inner, self.batches = inner, []  # type: ignore[var-annotated]
        self.name, self.version, self.signature = inner.name, inner.version, inner.signature

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        self.batches.append(images.clone())
        time.sleep(0.5)
        return self.inner.predict(images)


@pytest.fixture
def server() -> Iterator[tuple[str, list[torch.Tensor]]]:
    register_tiny("digits")
    slow = SlowPredictor(RegistryPredictor.from_ref("digits:1"))
    app = create_app(lambda: slow, policy=BatchPolicy(max_batch_size=1, max_wait_ms=0))
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
    yield url, slow.batches
    uv.should_exit = True
    thread.join(10)


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
    body = json.dumps({"inputs": body_images}).encode()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.1)  # queued behind the first image
    first.join(30)
    after = httpx.post(f"{url}{PREDICT}", json={"inputs": [digit_image(1).tolist()]},
                       timeout=30)
    assert after.status_code == 200
    seen = torch.cat(batches)
    assert len(seen) == 2, f"the model ran {len(seen)} images; the leaver's should be dropped"
    assert not any(torch.equal(img[0], torch.from_numpy(leaving)) for img in seen)
    assert _dropped(url) - before == images
