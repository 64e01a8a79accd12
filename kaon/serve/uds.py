"""A lean HTTP/1.1 client over a Unix socket, for the front → replica hop.

The front and the gateway forward every request to a replica on the same machine. httpx
(httpcore) checks every pooled connection's socket on each request, which cost several
milliseconds per request at 16-64 concurrent connections here; this client keeps idle
connections in a stack and lets h11 (the HTTP/1.1 state machine httpx itself uses) do all
the protocol work. It is only for trusted local replicas: no TLS, no redirects, no proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11


class UpstreamError(Exception):
    """The replica closed the connection, or answered with something that is not HTTP."""


@dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _conn: _Connection
    _client: UnixHTTPClient

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; the connection goes back to the pool at the end."""
        ok = False
        try:
            while True:
                event = await self._conn.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    ok = True
                    return
        finally:
            self._client._release(self._conn, reusable=ok)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    async def send(self, *events: h11.Event) -> None:
        data = b"".join(self.h11.send(e) or b"" for e in events)
        self.writer.write(data)
        await self.writer.drain()

    async def next_event(self) -> h11.Event:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamError(str(exc)) from None
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))  # b"": end of stream
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise UpstreamError("the replica closed the connection")
            return event

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class UnixHTTPClient:
    def __init__(self, path: str, max_idle: int = 64, idle_s: float = 30.0) -> None:
        """``idle_s`` must stay below the replica's keep-alive timeout (uvicorn ``75`` s is
        set by the pool), so a pooled connection is never one the replica already closed."""
        self.path, self.max_idle, self.idle_s = path, max_idle, idle_s
        self._idle: list[_Connection] = []
        self.closed = False

    async def send(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                   body: bytes = b"") -> UpstreamResponse:
        """Send a request; returns once the status and headers are in (read the body next)."""
        conn = self._take_idle() or await self._connect()
        try:
            request = h11.Request(method=method, target=target, headers=[
                (b"host", b"replica"), *headers, (b"content-length", str(len(body)).encode())])
            parts: list[h11.Event] = [request, h11.Data(data=body)] if body else [request]
            await conn.send(*parts, h11.EndOfMessage())
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.Response):
                    return UpstreamResponse(event.status_code, list(event.headers), conn, self)
                if not isinstance(event, h11.InformationalResponse):
                    raise UpstreamError(f"unexpected {type(event).__name__} from the replica")
        except (OSError, UpstreamError, h11.LocalProtocolError) as exc:
            conn.close()
            raise UpstreamError(str(exc) or type(exc).__name__) from None
        except BaseException:  # cancelled mid-request: the connection is in an unknown state
            conn.close()
            raise

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < self.idle_s and not conn.reader.at_eof() \
                    and not conn.writer.is_closing():  # the replica has not closed it
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 20)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the replica: {exc}") from None
        return _Connection(reader, writer)

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and not self.closed and conn.h11.our_state is h11.DONE \
                and conn.h11.their_state is h11.DONE and len(self._idle) < self.max_idle:
            conn.h11.start_next_cycle()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self.closed = True
        while self._idle:
            self._idle.pop().close()
