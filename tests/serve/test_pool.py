"""ReplicaPool against real servers on a Unix socket, with the client's side scripted as ASGI
messages (what uvicorn hands the front)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from websockets.asyncio.server import ServerConnection, unix_serve

from kaon.serve import pool as pool_module
from kaon.serve.pool import Replica, ReplicaPool
from kaon.serve.uds import UnixHTTPClient


async def _chatty(conn: ServerConnection) -> None:
    """A replica that answers each message with ten results."""
    async for _ in conn:
        for i in range(10):
            await conn.send(f'{{"seq": {i}}}')


async def _relay(tmp_path: Path, send_fails_after: int) -> tuple[list[dict[str, Any]], int]:
    """Relay one stream whose client vanishes after ``send_fails_after`` messages: its
    sends then raise, as uvicorn's do for a closed connection. Returns what reached the
    client and how many times the relay raised."""
    socket = tmp_path / "replica.sock"
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}):
        inbox.put_nowait(message)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        if len(sent) > send_fails_after:
            raise OSError("the client is gone")
        sent.append(message)
        if len(sent) > send_fails_after:
            inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})

    raised = 0
    async with _serving(socket):
        pool = ReplicaPool({}, 1, run_dir=tmp_path)
        pool.replicas = [Replica(index=0, socket=socket, ready=True)]
        ws = WebSocket({"type": "websocket", "path": "/v1/models/m/stream",
                        "query_string": b"", "headers": [], "extensions": {}}, receive, send)
        await ws.receive()
        try:
            await asyncio.wait_for(pool.forward_ws(ws), 10)
        except Exception:  # what uvicorn would log as "Exception in ASGI application"
            raised += 1
    return sent, raised


class _serving:
    def __init__(self, socket: Path) -> None:
        self.socket = socket

    async def __aenter__(self) -> None:
        self.server = await unix_serve(_chatty, str(self.socket))

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


def test_a_client_that_vanishes_mid_stream_ends_the_relay_quietly(tmp_path: Path) -> None:
    sent, raised = asyncio.run(_relay(tmp_path, send_fails_after=3))
    assert raised == 0
    assert sent[0]["type"] == "websocket.accept"
    assert [m["type"] for m in sent[1:]] == ["websocket.send"] * 3




async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A replica that dies mid-request: it reads the request and closes without answering."""
    await reader.read(1024)
    writer.close()


def _request(path: str) -> Request:
    async def receive() -> dict[str, Any]:  # the body was read; the client stays connected
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": path, "query_string": b"",
                    "headers": [(b"content-type", b"application/json")]}, receive)


@pytest.mark.parametrize(("path", "v2"), [("/v2/models/m/infer", True),
                                          ("/v1/models/m/predict", False)])
def test_the_fronts_own_errors_come_in_the_routes_protocol(tmp_path: Path, path: str,
                                                           v2: bool) -> None:
    """A 503 the front makes itself (no replica ready, a replica lost mid-request) is in V2's
    format on a V2 route, so Triton's and KServe's clients show its message."""
    socket = tmp_path / "replica.sock"

    async def scenario() -> list[Response]:
        server = await asyncio.start_unix_server(_hang_up, path=str(socket))
        pool = ReplicaPool({}, 1, run_dir=tmp_path)
        try:
            none_ready = await pool.forward(_request(path), body=b"{}")
            pool.replicas = [Replica(index=0, socket=socket, ready=True,
                                     client=UnixHTTPClient(str(socket)))]
            # the gateway forwards /d/NAME/v2/… as /v2/…: the route decides, not the URL
            lost = await pool.forward(_request("/d/name" + path), path=path, body=b"{}")
            return [none_ready, lost]
        finally:
            server.close()

    for response in asyncio.run(scenario()):
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        body = json.loads(bytes(response.body))
        if v2:
            assert set(body) == {"error"} and "eplica" in body["error"]
        else:
            assert body["error"] == "UnavailableError" and body["hint"]


def _one_replica(tmp_path: Path, socket: Path) -> ReplicaPool:
    """A pool whose one replica, ready, is whatever server listens on ``socket``."""
    pool = ReplicaPool({}, 1, run_dir=tmp_path)
    pool.replicas = [Replica(index=0, socket=socket, ready=True,
                             client=UnixHTTPClient(str(socket)))]
    return pool


async def _echo_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A replica that answers with the request target it was sent."""
    head = await reader.readuntil(b"\r\n\r\n")
    target = head.split(b" ")[1]
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(target), target))
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(("path", "target"), [
    ("/v1/models/é/predict", b"/v1/models/%C3%A9/predict"),
    ("/v1/models/a b/predict", b"/v1/models/a%20b/predict"),
    ("/v1/models/a?b/predict", b"/v1/models/a%3Fb/predict"),  # '%3F' in the URL
    ("/v1/models/a%b/predict", b"/v1/models/a%25b/predict"),
    ("/v2/models/m-1.2_x~/infer", b"/v2/models/m-1.2_x~/infer"),
])
def test_the_front_sends_the_replica_the_path_the_client_asked_for(
        tmp_path: Path, path: str, target: bytes) -> None:
    """The ASGI path is decoded: sent on as it was, a non-ASCII one was a 500, one with a
    space a 503 'replica failed', and an encoded '?' started a query."""
    socket = tmp_path / "replica.sock"

    async def scenario() -> Response:
        server = await asyncio.start_unix_server(_echo_target, path=str(socket))
        pool = _one_replica(tmp_path, socket)
        try:
            return await pool.forward(_request(path), body=b"{}")
        finally:
            server.close()

    response = asyncio.run(scenario())
    assert response.status_code == 200 and bytes(response.body) == target


async def _cookies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A replica that sets two cookies and answers with the request's head; to a HEAD, only
    the length of that answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    body = b"" if head.startswith(b"HEAD ") else head
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nset-cookie: a=1\r\n"
                 b"set-cookie: b=2\r\ndate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
                 b"server: the-replica\r\n\r\n%s" % (len(head), body))
    await writer.drain()
    writer.close()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_front_passes_repeated_headers_and_a_heads_length(tmp_path: Path,
                                                              method: str) -> None:
    """Two Set-Cookie headers stay two both ways (they were folded into one dict entry, and
    the last won), a HEAD answer keeps the replica's Content-Length (it was 0), and the
    replica's Date and Server are left out (the front's uvicorn adds its own: they came
    twice)."""
    socket = tmp_path / "replica.sock"

    async def scenario() -> Response:
        server = await asyncio.start_unix_server(_cookies, path=str(socket))
        pool = _one_replica(tmp_path, socket)
        request = _request("/v1/models/m")
        request.scope["method"] = method
        request.scope["headers"] = [(b"x-tag", b"one"), (b"x-tag", b"two"),
                                    (b"x-request-id", b"theirs")]
        try:
            return await pool.forward(request, body=b"",
                                      extra_headers={"X-Request-ID": "ours"})
        finally:
            server.close()

    response = asyncio.run(scenario())
    assert response.headers.getlist("set-cookie") == ["a=1", "b=2"]
    assert "date" not in response.headers and "server" not in response.headers
    lengths = response.headers.getlist("content-length")
    assert len(lengths) == 1 and int(lengths[0]) > 0
    if method == "GET":  # what the replica was sent
        head = bytes(response.body)
        assert b"x-tag: one\r\nx-tag: two\r\n" in head
        assert b"x-request-id: ours" in head and b"theirs" not in head
    else:
        assert bytes(response.body) == b""


def test_a_stream_whose_replica_is_gone_before_it_opens_is_a_503_to_retry(
        tmp_path: Path) -> None:
    """No replica listens on the socket (it died between the pick and the connect): the
    client's handshake gets 503 with Retry-After, not an accepted stream that closes."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def scenario() -> None:
        pool = ReplicaPool({}, 1, run_dir=tmp_path)
        pool.replicas = [Replica(index=0, socket=tmp_path / "gone.sock", ready=True)]
        ws = WebSocket({"type": "websocket", "path": "/v1/models/m/stream", "query_string": b"",
                        "headers": [], "extensions": {"websocket.http.response": {}}},
                       receive, send)
        await ws.receive()
        await asyncio.wait_for(pool.forward_ws(ws), 10)
        assert pool.replicas[0].in_flight == 0

    asyncio.run(scenario())
    start = sent[0]
    assert start["type"] == "websocket.http.response.start" and start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert not [m for m in sent if m["type"] == "websocket.accept"]


def test_the_supervisor_outlives_an_error_in_looking_after_a_replica(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart that fails (fork refused for want of memory) is tried again on the next
    tick; the supervisor task used to end with the error, and no replica came back again."""
    calls: list[int] = []

    def spawn(replica: Replica) -> None:
        calls.append(replica.index)
        if len(calls) == 1:
            raise OSError(12, "Cannot allocate memory")

    async def scenario() -> None:
        pool = ReplicaPool({}, 1, run_dir=tmp_path)
        monkeypatch.setattr(pool, "_spawn", spawn)
        pool.replicas = [Replica(index=0, socket=tmp_path / "r.sock")]  # no process: dead
        task = asyncio.create_task(pool._supervise())
        await asyncio.sleep(0.35)
        assert not task.done()
        task.cancel()

    asyncio.run(scenario())
    assert len(calls) >= 2  # failed once, then tried again


async def _stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A replica whose event loop is stuck: it takes the connection and never answers."""
    await asyncio.Event().wait()


async def _probe_stuck(tmp_path: Path, probes: int, silent_s: float) -> list[Replica]:
    """Two ready replicas (live processes) that stop answering ``silent_s`` seconds ago,
    each probed ``probes`` times."""
    now = time.monotonic()
    pool = ReplicaPool({}, 2, run_dir=tmp_path, timeout=0.5)
    servers = []
    for i in range(2):
        socket = tmp_path / f"r{i}.sock"
        servers.append(await asyncio.start_unix_server(_stuck, path=str(socket)))
        pool.replicas.append(Replica(
            index=i, socket=socket, process=subprocess.Popen(["sleep", "60"]), ready=True,
            ready_at=now - 60, answered_at=now - silent_s, client=UnixHTTPClient(str(socket))))
    try:
        for _ in range(probes):
            for replica in pool.replicas:
                await pool._check(replica)
        return pool.replicas
    finally:
        for server in servers:
            server.close()
        for replica in pool.replicas:
            assert replica.client is not None
            await replica.client.aclose()


def test_a_stuck_replica_leaves_the_rotation_unless_it_is_the_last_ready_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "PROBE_TIMEOUT_S", 0.05)
    early = asyncio.run(_probe_stuck(tmp_path, pool_module.MISSES - 1, silent_s=0))
    replicas = asyncio.run(_probe_stuck(tmp_path, pool_module.MISSES, silent_s=0))
    try:
        assert [r.ready for r in early] == [True, True]  # a missed probe or two: kept
        # out of rotation, but the other one is kept: all requests to a slow replica beat
        # a 503 for every request; neither has been silent long enough to be killed
        assert [r.ready for r in replicas] == [False, True]
        assert all(r.process and r.process.poll() is None for r in replicas)
    finally:
        for replica in [*early, *replicas]:
            assert replica.process is not None
            replica.process.kill()
            replica.process.wait()


def test_a_replica_silent_past_the_request_timeout_is_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "PROBE_TIMEOUT_S", 0.05)
    monkeypatch.setattr(pool_module, "HUNG_S", 1.0)
    replicas = asyncio.run(_probe_stuck(tmp_path, pool_module.MISSES, silent_s=2.0))
    for replica in replicas:  # the supervisor restarts what died
        assert replica.process is not None
        assert replica.process.wait(timeout=5) == -signal.SIGKILL


def test_a_replica_that_dies_soon_after_ready_backs_off(tmp_path: Path) -> None:
    """Dying within 10 s of ready counts towards the back-off as dying before ready does (a
    model that crashes on its first request restarted every 0.1 s), while one that served
    for longer starts again at once."""
    async def death(ready_for: float, failures: int) -> Replica:
        process = subprocess.Popen(["true"])
        process.wait()
        replica = Replica(index=0, socket=tmp_path / "r.sock", process=process, ready=True,
                          ready_at=100.0, failures=failures)
        pool = ReplicaPool({}, 1, run_dir=tmp_path)
        pool.replicas = [replica]
        await pool._look_after(replica, 100.0 + ready_for)
        await pool.stop()  # a replica restarted at once is stopped
        return replica

    soon = asyncio.run(death(ready_for=5.0, failures=2))
    assert soon.failures == 3 and soon.retry_at == 105.0 + 3.0  # 1 s, 3 s, 7 s … up to 30
    assert soon.process is None  # not restarted before retry_at
    later = asyncio.run(death(ready_for=60.0, failures=2))
    assert later.failures == 1 and later.retry_at == 160.0
