"""`kaon serve --replicas N`: a front before N replicas; a killed replica costs 503s, not hangs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from kaon.net import free_port
from tests.registry.fixtures import register_tiny
from tests.serve.test_stream import tensor_frame

SLOW_SERVICE = '''
import time
import kaon

class Slow(kaon.Service):
    @kaon.handler
    def wait(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"
'''


FAILING_SERVICE = '''
import kaon

class Failing(kaon.Service):
    @kaon.handler
    def fail(self, a: int) -> int:
        raise ValueError("bad luck")

    @kaon.handler
    def ok(self, a: int) -> int:
        return a
'''


def _replicas(pid: int) -> list[int]:
    """The front's replica processes (uvicorn on a Unix socket each)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [c for c in children
            if b"--uds" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _ready(url: str, replicas: int) -> bool:
    try:
        r = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    if replicas == 1:  # one process, no front
        return r.status_code == 200
    return r.status_code == 200 and r.json()["replicas_ready"] == replicas


def _start(args: list[str], kaon_home: Path, replicas: int = 2) -> tuple[subprocess.Popen[bytes],
                                                                          str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kaon.cli.main", "serve", *args, "--replicas", str(replicas),
         "--port", str(port)], env={**os.environ, "KAON_HOME": str(kaon_home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while not _ready(url, replicas):
        assert server.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "replicas never became ready"
        time.sleep(0.2)
    return server, url


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture
def model_front(kaon_home: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    register_tiny("digits")
    server, url = _start(["digits:1"], kaon_home)
    yield server, url
    _stop(server)


@pytest.mark.serial  # times processes on the wall clock: run alone (Makefile)
@pytest.mark.slow
def test_a_killed_replica_is_restarted_and_no_request_hangs(model_front) -> None:
    server, url = model_front
    body = {"inputs": [np.zeros((28, 28), dtype=int).tolist()]}
    before = _replicas(server.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    outcomes = []
    until = time.monotonic() + 5
    while time.monotonic() < until:
        started = time.monotonic()
        response = httpx.post(f"{url}/v1/models/digits/predict", json=body, timeout=10)
        outcomes.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
        assert time.monotonic() - started < 6  # failed fast or succeeded: never hung
    assert outcomes.count(200) > 0
    assert set(outcomes) <= {200, 503}  # never a reset connection: the front answers
    deadline = time.monotonic() + 60
    while not _ready(url, 2):
        assert time.monotonic() < deadline, "the killed replica was not restarted"
        time.sleep(0.2)
    assert before[0] not in _replicas(server.pid)
    metrics = httpx.get(f"{url}/metrics").text
    assert "kaon_replica_restarts_total 1.0" in metrics
    assert 'kaon_request_seconds_count{route="/v1/models/{name}/predict",status="200",' \
        'replica="' in metrics


@pytest.mark.serial  # times processes on the wall clock: run alone (Makefile)
@pytest.mark.slow
def test_a_hung_replica_leaves_the_rotation_and_is_restarted(kaon_home: Path) -> None:
    """A replica whose process is alive but answers nothing (SIGSTOP stands in for a stuck
    event loop) was ready for good: half the requests waited for their timeout."""
    register_tiny("digits")
    server, url = _start(["digits:1", "--timeout", "1"], kaon_home)  # the front's: 6 s
    hung = _replicas(server.pid)[0]
    body = {"inputs": [np.zeros((28, 28), dtype=int).tolist()]}
    try:
        os.kill(hung, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz", timeout=5).json()["replicas_ready"] != 1:
            assert time.monotonic() < deadline, "the hung replica stayed in the rotation"
            time.sleep(0.2)
        for _ in range(6):  # each goes to the replica that answers
            started = time.monotonic()
            response = httpx.post(f"{url}/v1/models/digits/predict", json=body, timeout=10)
            assert response.status_code == 200 and time.monotonic() - started < 3
        deadline = time.monotonic() + 60  # no answer for the front's timeout: killed
        while hung in _replicas(server.pid) or not _ready(url, 2):
            assert time.monotonic() < deadline, "the hung replica was not restarted"
            time.sleep(0.2)
        assert "kaon_replica_restarts_total 1.0" in httpx.get(f"{url}/metrics").text
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
        _stop(server)


@pytest.mark.serial  # times processes on the wall clock: run alone (Makefile)
@pytest.mark.slow
def test_requests_in_flight_on_a_killed_replica_get_503_at_once(kaon_home: Path,
                                                                 tmp_path: Path) -> None:
    service = tmp_path / "slow.py"
    service.write_text(SLOW_SERVICE)
    server, url = _start([f"{service}:Slow"], kaon_home)
    try:
        async def scenario() -> list[tuple[int, float]]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                async def call() -> tuple[int, float]:
                    started = time.monotonic()
                    r = await client.post("/wait", json={"seconds": 4})
                    return r.status_code, time.monotonic() - started

                calls = [asyncio.ensure_future(call()) for _ in range(4)]
                await asyncio.sleep(1.0)  # all four are in flight, two on each replica
                os.kill(_replicas(server.pid)[0], signal.SIGKILL)
                return await asyncio.gather(*calls)

        results = asyncio.run(scenario())
        codes = sorted(code for code, _ in results)
        assert codes == [200, 200, 503, 503]
        assert all(seconds < 2.0 for code, seconds in results if code == 503)
    finally:
        _stop(server)


@pytest.mark.slow
def test_a_stream_through_the_front_keeps_order(model_front) -> None:
    from websockets.sync.client import connect

    _, url = model_front
    with connect(url.replace("http", "ws") + "/v1/models/digits/stream") as ws:
        for i in range(5):
            ws.send(tensor_frame(i))
        results = [json.loads(ws.recv(timeout=10)) for _ in range(5)]
    assert [r["seq"] for r in results] == list(range(5))
    assert all("latency_ms" in r for r in results)


def test_a_stream_message_past_the_largest_frame_is_closed_unread(model_front) -> None:
    """uvicorn's own bound on a WebSocket message is 16 MiB: one of those, held whole before
    Kaon's frame check, is closed with 1009 (message too big) at 8 MiB instead, by the front
    and by each replica behind it; the server goes on serving."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import ClientConnection, connect, unix_connect

    from kaon.serve.protocols.stream import MAX_FRAME_BYTES

    def refused(ws: ClientConnection) -> int | None:
        with ws, pytest.raises(ConnectionClosed) as closed:
            # a binary frame's head (masked, as a client's must be) that announces one byte
            # more than the bound, and no payload: refused on the head alone
            ws.socket.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, MAX_FRAME_BYTES + 1)
                              + b"mask")
            ws.recv(timeout=10)
        return closed.value.rcvd.code if closed.value.rcvd else None

    server, url = model_front
    stream = url.replace("http", "ws") + "/v1/models/digits/stream"
    assert refused(connect(stream)) == 1009
    replica = _replicas(server.pid)[0]
    args = Path(f"/proc/{replica}/cmdline").read_bytes().split(b"\0")
    socket = args[args.index(b"--uds") + 1].decode()
    assert refused(unix_connect(socket, "ws://replica/v1/models/digits/stream")) == 1009
    with connect(stream) as ws:
        ws.send(tensor_frame(0))
        assert json.loads(ws.recv(timeout=10))["seq"] == 0


@pytest.mark.parametrize("replicas", [1, 2])
def test_max_bodies_mb_bounds_the_bodies_a_server_holds(kaon_home: Path, replicas: int) -> None:
    """`--max-bodies-mb 1`: while one client has sent 700 KiB of a 1,400 KiB body, another's
    512 KiB body gets a 503 to retry; once the first client is gone, it is taken. With
    replicas, the front holds the bodies, under the same flag."""
    import socket

    register_tiny("digits")
    server, url = _start(["digits:1", "--max-bodies-mb", "1"], kaon_home, replicas=replicas)
    predict = f"{url}/v1/models/digits/predict"
    body = {"content": b" " * (512 * 1024), "headers": {"content-type": "application/json"}}
    try:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as slow:
            slow.sendall(b"POST /v1/models/digits/predict HTTP/1.1\r\nhost: kaon\r\n"
                         b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
                         % (1400 * 1024) + b" " * (700 * 1024))
            deadline = time.monotonic() + 10  # until the server has read what was sent
            while (busy := httpx.post(predict, timeout=10, **body)).status_code != 503:
                assert time.monotonic() < deadline, "the half-sent body was not counted"
                time.sleep(0.2)
        assert busy.headers["retry-after"] == "1"
        assert "as many request bodies as it may" in busy.json()["message"]
        deadline = time.monotonic() + 10
        while (taken := httpx.post(predict, timeout=10, **body)).status_code == 503:
            assert time.monotonic() < deadline, "the budget was not given back"
            time.sleep(0.2)
        assert taken.status_code in (400, 422)  # read whole, and found not to be JSON
    finally:
        _stop(server)


@pytest.mark.slow
def test_the_front_answers_in_kaons_format_and_leaves_no_run_folder(kaon_home: Path) -> None:
    register_tiny("digits")
    server, url = _start(["digits:1"], kaon_home)
    try:
        refused = httpx.post(f"{url}/healthz")
        assert refused.status_code == 405 and refused.json()["error"] == "HTTPError"
        assert refused.json()["hint"]
        args = Path(f"/proc/{_replicas(server.pid)[0]}/cmdline").read_bytes().split(b"\0")
        run_dir = Path(args[args.index(b"--uds") + 1].decode()).parent
        assert run_dir.is_dir()
    finally:
        _stop(server)
    assert not run_dir.exists()


@pytest.mark.slow
def test_the_front_passes_on_a_replicas_refusals_and_closes(model_front) -> None:
    """A stream closed for garbage stays 1003 with its message (not 1011 "reopen", which would
    have the client resend it); a refused opening keeps its HTTP status; good streams go on."""
    from websockets.exceptions import ConnectionClosedError, InvalidStatus
    from websockets.sync.client import connect

    _, url = model_front
    ws_url = url.replace("http", "ws") + "/v1/models/digits/stream"
    with connect(ws_url) as good, connect(ws_url) as bad:
        bad.send(b"\x00garbage")
        assert "neither a PNG/JPEG image" in json.loads(bad.recv(timeout=10))["error"]
        with pytest.raises(ConnectionClosedError) as closed:
            bad.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        good.send(tensor_frame(0))
        assert json.loads(good.recv(timeout=10))["seq"] == 0
    for path, status in (("/v1/models/nope/stream", 404),
                         ("/v1/models/digits/stream?max_pending=abc", 400)):
        with pytest.raises(InvalidStatus) as refused:
            connect(url.replace("http", "ws") + path).close()
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["message"]


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [1, 2])
def test_streams_are_not_compressed_even_when_the_client_offers_it(kaon_home: Path,
                                                                   replicas: int) -> None:
    # browsers and `websockets` offer permessage-deflate; zlib on every frame cost the sender
    # more CPU than the model did (kaon.serve.protocols.stream), so the server declines it
    from websockets.asyncio.client import unix_connect
    from websockets.sync.client import connect

    register_tiny("digits")
    server, url = _start(["digits:1"], kaon_home, replicas)
    try:
        with connect(url.replace("http", "ws") + "/v1/models/digits/stream",
                     compression="deflate") as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            ws.send(tensor_frame(0))
            assert json.loads(ws.recv(timeout=10))["seq"] == 0

        async def replica_extensions(socket: str) -> str | None:
            async with unix_connect(socket, "ws://replica/v1/models/digits/stream",
                                    compression="deflate") as ws:
                return ws.response.headers.get("Sec-WebSocket-Extensions")

        sockets = []  # and the front's hop to each replica is not compressed either
        for pid in _replicas(server.pid):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            sockets.append(args[args.index(b"--uds") + 1].decode())
        assert len(sockets) == (replicas if replicas > 1 else 0)
        for socket in sockets:
            assert asyncio.run(replica_extensions(socket)) is None
    finally:
        _stop(server)


@pytest.mark.slow
def test_the_front_bounds_bodies_and_passes_request_ids(model_front) -> None:
    _, url = model_front
    path = f"{url}/v1/models/digits/predict"
    image = np.zeros((28, 28), dtype=int).tolist()
    r = httpx.post(path, json={"inputs": [image]}, headers={"x-request-id": "trace-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
    assert r.json()["predictions"][0]["label"]
    big = b"x" * (17 * 1024**2)  # the default limit is 16 MiB
    declared = httpx.post(path, content=big)
    assert declared.status_code == 413 and declared.json()["error"] == "PayloadTooLarge"
    streamed = httpx.post(path, content=iter([big[:9 << 20], big[9 << 20:]]))  # chunked
    assert streamed.status_code == 413 and streamed.headers["x-request-id"]
    v2 = httpx.post(f"{url}/v2/models/digits/infer", content=big)
    assert v2.status_code == 413 and set(v2.json()) == {"error"}  # the protocol's format
    assert httpx.get(f"{url}/v1/models/nope", timeout=10).status_code == 404  # the replica's


@pytest.mark.slow
def test_a_handler_that_raises_fails_only_its_own_request(kaon_home: Path,
                                                          tmp_path: Path) -> None:
    """A 500 keeps the replica's connection: before, uvicorn closed it after the error, the
    front had pooled it, and the next request on it got 503 "Replica failed"."""
    service = tmp_path / "failing.py"
    service.write_text(FAILING_SERVICE)
    server, url = _start([f"{service}:Failing"], kaon_home)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            codes = []
            for i in range(6):
                failed = client.post("/fail", json={"a": i})
                codes.append(failed.status_code)
                assert failed.json()["message"] == "The handler failed on this request: " \
                                                   "ValueError."
                codes += [client.post("/ok", json={"a": i}).status_code for _ in range(3)]
    finally:
        _stop(server)
    assert codes == [500, 200, 200, 200] * 6


@pytest.mark.serial  # times processes on the wall clock: run alone (Makefile)
@pytest.mark.slow
def test_ctrl_c_at_a_terminal_drains_without_restarting_replicas(kaon_home: Path,
                                                                 tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to its whole foreground process group. The replicas run in a
    session of their own, so only the front gets it: it finishes the request in flight and
    stops them. Before, each replica stopped by itself and the front, still draining, saw
    them dead and started new ones."""
    service = tmp_path / "slow.py"
    service.write_text(SLOW_SERVICE)
    port = free_port()
    server = subprocess.Popen(  # a session of its own, as a shell gives a foreground job
        [sys.executable, "-m", "kaon.cli.main", "serve", f"{service}:Slow", "--replicas", "2",
         "--port", str(port)], env={**os.environ, "KAON_HOME": str(kaon_home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _ready(url, 2):
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        first = set(_replicas(server.pid))
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.post, f"{url}/wait", json={"seconds": 3}, timeout=30)
            time.sleep(0.5)  # in flight
            os.killpg(server.pid, signal.SIGINT)  # what the terminal does
            seen: set[int] = set()
            while not slow.done():
                seen |= set(_replicas(server.pid))
                time.sleep(0.05)
            assert slow.result().status_code == 200
        assert seen <= first, f"replicas started during shutdown: {seen - first}"
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
