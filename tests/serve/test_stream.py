"""WebSocket frame streams: order, latency, both overload policies, garbage, isolation."""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from kaon.serve import RegistryPredictor, create_app
from kaon.serve.batching import BatchPolicy
from tests.registry.fixtures import register_tiny
from tests.serve.test_app import wait_ready

STREAM = "/v1/models/digits/stream"


class SlowPredictor:
    """The registry model, made slower than the frame rate."""

    def __init__(self, delay: float) -> None:
        self.inner = RegistryPredictor.from_ref("digits:1")
        self.name, self.version = self.inner.name, self.inner.version
        self.signature = self.inner.signature
        self.delay = delay

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        time.sleep(self.delay)
        return self.inner.predict(images)


def serve(delay: float = 0.0) -> TestClient:
    register_tiny("digits")
    load = (lambda: SlowPredictor(delay)) if delay else (
        lambda: RegistryPredictor.from_ref("digits:1"))
    return TestClient(create_app(load, policy=BatchPolicy(max_batch_size=1, max_wait_ms=0)))


@pytest.fixture
def fast() -> Iterator[TestClient]:
    with serve() as client:
        wait_ready(client)
        yield client


def tensor_frame(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    header = json.dumps({"shape": [28, 28], "dtype": "uint8"}).encode()
    return b"KTNS" + struct.pack("<I", len(header)) + header + pixels.tobytes()


def png_frame(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def test_one_result_per_frame_in_order_with_latency(fast: TestClient) -> None:
    # block, not the default drop_oldest (max_pending=8): under drop_oldest a first frame
    # slowed ~10 ms (a busy CPU, a GC pause) lets frame 9 push frame 1 out, and the tenth
    # receive below would wait forever (the test client's receive has no timeout)
    with fast.websocket_connect(f"{STREAM}?policy=block") as ws:
        for i in range(10):
            ws.send_bytes(tensor_frame(i) if i % 2 else png_frame(i))
        results = [ws.receive_json() for _ in range(10)]
    assert [r["seq"] for r in results] == list(range(10))
    assert all(r["latency_ms"] >= r["model_ms"] >= 0 for r in results)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in results)


def _flood(max_pending: int, frames: int = 30) -> list[dict[str, Any]]:
    """Send ``frames`` frames at once to a model 50 ms per call behind a ``drop_oldest``
    stream, ask to close, and return every result."""
    with serve(delay=0.05) as client:
        wait_ready(client)
        query = f"?policy=drop_oldest&max_pending={max_pending}"
        with client.websocket_connect(STREAM + query) as ws:
            for i in range(frames):
                ws.send_bytes(tensor_frame(i))
            ws.send_text('{"type": "close"}')
            results = []
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    results.append(ws.receive_json())
    return results


def test_drop_oldest_drops_and_reports_frames_when_the_model_lags() -> None:
    results = _flood(max_pending=2)
    seqs = [r["seq"] for r in results]
    reported = sorted(s for r in results for s in r["dropped"])
    assert seqs == sorted(seqs) and len(seqs) < 30
    assert sorted(seqs + reported) == list(range(30))  # every frame: answered or reported
    assert results[-1]["dropped_total"] == len(reported)


def test_a_result_lists_a_bounded_number_of_dropped_frames(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast sender and a slow model: one result listed every frame dropped since the last
    one, without bound; now the first MAX_LISTED of them, and dropped_total counts all."""
    monkeypatch.setattr("kaon.serve.protocols.stream.MAX_LISTED", 3)
    results = _flood(max_pending=1)
    assert all(len(r["dropped"]) <= 3 for r in results)
    assert max(len(r["dropped"]) for r in results) == 3  # more were dropped than listed
    assert len(results) + results[-1]["dropped_total"] == 30


def test_block_policy_answers_every_frame() -> None:
    with serve(delay=0.02) as client:
        wait_ready(client)
        with client.websocket_connect(f"{STREAM}?policy=block&max_pending=2") as ws:
            for i in range(15):
                ws.send_bytes(tensor_frame(i))
            results = [ws.receive_json() for _ in range(15)]
    assert [r["seq"] for r in results] == list(range(15))
    assert all(r["dropped"] == [] for r in results)
    # the sender was held back: never more than max_pending frames waited in the server
    waiting = [r["pending"] for r in results]
    assert max(waiting) == 1 and min(waiting) == 0, waiting  # ≤ max_pending - 1 behind each


def test_a_closed_stream_is_logged_and_its_drops_observed(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="kaon.access"), serve(delay=0.05) as client:
        wait_ready(client)
        with client.websocket_connect(f"{STREAM}?policy=drop_oldest&max_pending=1",
                                      headers={"X-Request-ID": "cam-7"}) as ws:
            for i in range(10):
                ws.send_bytes(tensor_frame(i))
            ws.send_text('{"type": "close"}')
            results = []
            with contextlib.suppress(Exception):
                while True:
                    results.append(ws.receive_json())
        metrics = client.get("/metrics").text
    line = next(r.fields for r in caplog.records if "stream" in getattr(r, "fields", {}))
    dropped = results[-1]["dropped_total"]
    assert dropped > 0
    assert line["stream"] == "cam-7" and line["policy"] == "drop_oldest"
    assert (line["frames"], line["answered"], line["dropped"]) == (10, len(results), dropped)
    assert line["close_code"] == 1000
    assert 'kaon_stream_dropped_per_stream_count{policy="drop_oldest"} 1.0' in metrics
    assert f'kaon_stream_dropped_per_stream_sum{{policy="drop_oldest"}} {float(dropped)}' in metrics


class PickyPredictor(SlowPredictor):
    """Fails on any image whose first pixel is 255; the frames of other images pass."""

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        if bool((images[:, 0, 0, 0] == 255).any()):
            raise ValueError("first pixel saturated")
        return super().predict(images)


def marked_frame(seed: int, first: int) -> bytes:
    frame = bytearray(tensor_frame(seed))
    frame[-28 * 28] = first  # the first pixel
    return bytes(frame)


def test_a_frame_the_model_fails_on_gets_an_error_result_and_the_stream_goes_on() -> None:
    register_tiny("digits")
    app = create_app(lambda: PickyPredictor(0.0),
                     policy=BatchPolicy(max_batch_size=1, max_wait_ms=0))
    with TestClient(app) as client:
        wait_ready(client)
        with client.websocket_connect(f"{STREAM}?policy=block") as ws:
            for i in range(4):
                ws.send_bytes(marked_frame(i, 255 if i == 1 else 0))
            results = [ws.receive_json() for _ in range(4)]
    assert [r["seq"] for r in results] == [0, 1, 2, 3]
    assert results[1]["error"] == "PredictionError" and "ValueError" in results[1]["message"]
    assert all("probabilities" in r for i, r in enumerate(results) if i != 1)


def test_a_saturated_server_slows_block_streams_instead_of_closing_them() -> None:
    """With a queue bound of one image, four streams' frames meet a full queue: each such
    frame is tried again (drop_oldest would drop it when a newer one waits). Before, the
    first refusal closed the stream with 1011."""
    register_tiny("digits")
    app = create_app(lambda: SlowPredictor(0.02),
                     policy=BatchPolicy(max_batch_size=1, max_wait_ms=0, max_queue=1))
    with TestClient(app) as client:
        wait_ready(client)
        with contextlib.ExitStack() as opened:
            streams = [opened.enter_context(client.websocket_connect(f"{STREAM}?policy=block"))
                       for _ in range(4)]
            for i in range(6):
                for ws in streams:
                    ws.send_bytes(tensor_frame(i))
            results = [[ws.receive_json() for _ in range(6)] for ws in streams]
        rejected = client.get("/metrics").text
    for stream in results:
        assert [r.get("seq") for r in stream] == list(range(6)), stream
    assert re.search(r"^kaon_rejected_total [1-9]", rejected, flags=re.M), "no frame was refused"


def test_the_close_request_may_be_spaced_as_any_json(fast: TestClient) -> None:
    with fast.websocket_connect(STREAM) as ws:
        ws.send_bytes(tensor_frame(0))
        ws.send_text('{"type":"close"}')  # JSON.stringify's spacing
        assert ws.receive_json()["seq"] == 0
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1000


def test_garbage_closes_only_that_stream(fast: TestClient) -> None:
    with fast.websocket_connect(STREAM) as good, fast.websocket_connect(STREAM) as bad:
        bad.send_bytes(b"\x00garbage")
        error = bad.receive_json()
        assert "neither a PNG/JPEG image nor a KTNS tensor" in error["error"]
        good.send_bytes(tensor_frame(1))
        assert good.receive_json()["seq"] == 0
    assert fast.post("/v1/models/digits/predict",
                     json={"inputs": [np.zeros((28, 28)).tolist()]}).status_code == 200


@pytest.mark.parametrize("header", [b'{"shape": [Infinity, 28]}', b'{"shape": [28.9, 28]}',
                                    b'{"shape": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                    b'[1, 2]'])
def test_a_bad_tensor_header_gets_an_error_message_not_an_abort(
        fast: TestClient, header: bytes) -> None:
    with fast.websocket_connect(STREAM) as ws:
        ws.send_bytes(b"KTNS" + struct.pack("<I", len(header)) + header + bytes(28 * 28))
        assert "tensor header" in ws.receive_json()["error"]


def test_a_wrong_frame_size_names_the_signature(fast: TestClient) -> None:
    with fast.websocket_connect(STREAM) as ws:
        header = json.dumps({"shape": [32, 32]}).encode()
        ws.send_bytes(b"KTNS" + struct.pack("<I", len(header)) + header + bytes(32 * 32))
        assert "1x28x28" in ws.receive_json()["error"]


def test_a_frame_far_larger_than_the_model_takes_is_refused(fast: TestClient) -> None:
    """A small model's frame may be at most 1 MiB: 64 waiting frames of 8 MiB each
    (512 MiB) was the bound for one stream of 28x28 images."""
    with fast.websocket_connect(STREAM) as ws:
        ws.send_bytes(b"\x89PNG" + bytes(1 << 20))
        error = ws.receive_json()["error"]
        assert "over 1048576 bytes, the most a stream of 1x28x28 frames takes" in error
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1003


@pytest.mark.parametrize(("query", "status", "words"), [
    ("?policy=lifo", 400, "policy 'lifo'"),
    ("?max_pending=abc", 400, "max_pending must be an integer"),
    ("?max_pending=0", 400, "max_pending must be an integer"),
    ("?max_pending=65", 400, "max_pending must be an integer"),
    ("?max_pending=%C2%B2", 400, "max_pending must be an integer"),  # '²' passes isdigit()
    ("?max_pending=" + "9" * 5000, 400, "max_pending must be an integer"),
])
def test_a_bad_opening_is_refused_at_the_handshake_with_what_to_send(
        fast: TestClient, query: str, status: int, words: str) -> None:
    with pytest.raises(WebSocketDenialResponse) as refused:
        fast.websocket_connect(STREAM + query).__enter__()
    assert refused.value.status_code == status
    body = json.loads(refused.value.content)
    assert words in body["message"] and "policy=drop_oldest|block" in body["hint"]


def test_an_unknown_model_is_a_404_at_the_handshake(fast: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as refused:
        fast.websocket_connect("/v1/models/nope/stream").__enter__()
    assert refused.value.status_code == 404
    assert json.loads(refused.value.content)["error"] == "NotFoundError"


def test_a_client_that_closes_is_logged_with_its_own_close_code(
        fast: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="kaon.access"):
        with fast.websocket_connect(STREAM) as ws:
            ws.send_bytes(tensor_frame(0))
            assert ws.receive_json()["seq"] == 0
            ws.close(code=4001)  # an application's own code, not the 1000 assumed
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                "stream" in getattr(r, "fields", {}) for r in caplog.records):
            time.sleep(0.01)
    line = next(r.fields for r in caplog.records if "stream" in getattr(r, "fields", {}))
    assert line["close_code"] == 4001 and line["answered"] == 1
