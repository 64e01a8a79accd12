"""ReplicaPool.forward_ws against a real WebSocket server on a Unix socket, with the client's
side scripted as ASGI messages (what uvicorn hands the front)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.websockets import WebSocket
from websockets.asyncio.server import ServerConnection, unix_serve

from kaon.serve.pool import Replica, ReplicaPool


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


