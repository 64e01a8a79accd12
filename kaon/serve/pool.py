"""A pool of replica processes behind one front, and the forwarding of requests to them.

Each replica is a uvicorn process serving :func:`kaon.serve.factory.app_from_env` on a Unix
socket of its own. The pool starts them, waits for ``/readyz``, restarts one that dies (with
a back-off when it keeps dying) and sends each request to the ready replica with the fewest
requests in flight. A request whose replica dies under it answers 503 at once, never hangs.
The front (``kaon serve --replicas N``) and the platform gateway both forward through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge

from kaon.procs import die_with_parent
from kaon.serve.asgi import PROBE_HEADER, close_quietly, protocol_error, refuse_handshake
from kaon.serve.protocols.stream import MAX_FRAME_BYTES
from kaon.serve.uds import UnixHTTPClient, UpstreamError, UpstreamResponse

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "host", "content-length"}
_SERVERS_OWN = frozenset({b"date", b"server"})  # the front's uvicorn adds its own


@dataclass
class Replica:
    index: int
    socket: Path
    process: subprocess.Popen[bytes] | None = None
    client: UnixHTTPClient | None = None
    ready: bool = False
    in_flight: int = 0
    failures: int = 0  # deaths in a row before or soon after ready; drives the back-off
    retry_at: float = 0.0
    ready_at: float | None = None  # when this process first answered /readyz
    answered_at: float = 0.0  # its last answer to a probe
    missed: int = 0  # probes in a row it did not answer
    probed_at: float = 0.0
    probe: asyncio.Task[None] | None = None


@dataclass
class PoolMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.restarts = Counter("kaon_replica_restarts_total", "Replicas restarted after dying",
                                registry=self.registry)
        self.ready = Gauge("kaon_replicas_ready", "Replicas answering /readyz",
                           registry=self.registry)
        self.lost = Counter("kaon_replica_lost_requests_total",
                            "In-flight requests answered 503 because their replica died",
                            registry=self.registry)


log = logging.getLogger("kaon.serve.pool")
PROBE_S = 2.0  # a ready replica is asked /readyz this often
PROBE_TIMEOUT_S = 5.0  # ... and has this long to answer
MISSES = 3  # unanswered probes in a row that take a ready replica out of rotation
HUNG_S = 15.0  # the least time without an answer before a replica is killed as hung
_PATH_SAFE = "/!$&'()*+,;=:@-._~"  # RFC 3986 pchar, less the percent sign


def unavailable(message: str, hint: str = "Retry in a second.", path: str = "") -> JSONResponse:
    """503 with ``Retry-After``, in the format of ``path``'s protocol."""
    return protocol_error(path, 503, "UnavailableError", message, hint,
                          headers={"Retry-After": "1"})


class ReplicaPool:
    """``size`` replicas of one server config (see :mod:`kaon.serve.factory`)."""

    def __init__(self, config: dict[str, Any], size: int, *, timeout: float = 35.0,
                 env: dict[str, str] | None = None, run_dir: Path | None = None) -> None:
        self.config, self.timeout = config, timeout
        self.env = {**os.environ, **(env or {}), "KAON_SERVE_CONFIG": json.dumps(config)}
        self._own_dir = run_dir is None  # made here: removed by stop()
        self._dir = Path(run_dir or tempfile.mkdtemp(prefix="kaon-pool-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        self.replicas: list[Replica] = []
        self.metrics = PoolMetrics()
        self._next = 0
        self._task: asyncio.Task[None] | None = None
        self._size = size

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self.scale(self._size)
        self._task = asyncio.create_task(self._supervise(), name="kaon-pool-supervisor")

    async def stop(self) -> None:
        """SIGTERM every replica: uvicorn stops accepting and finishes in-flight requests."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(self._retire(r) for r in self.replicas))
        self.replicas.clear()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def scale(self, size: int) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one replica")
        self._size = size
        while len(self.replicas) < size:
            replica = Replica(len(self.replicas), self._dir / f"replica-{len(self.replicas)}.sock")
            self.replicas.append(replica)
            self._spawn(replica)
        while len(self.replicas) > size:
            await self._retire(self.replicas.pop())

    def _spawn(self, replica: Replica) -> None:
        replica.socket.unlink(missing_ok=True)
        replica.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "kaon.serve.factory:app_from_env", "--factory",
             "--uds", str(replica.socket), "--log-level", "warning", "--no-access-log",
             "--timeout-keep-alive", "75",
             "--timeout-graceful-shutdown", str(int(self.timeout)),
             "--ws-per-message-deflate", "false",  # kaon.serve.protocols.stream: why
             "--ws-max-size", str(MAX_FRAME_BYTES)],  # as kaon.serve.front.SERVER_OPTIONS
            env=self.env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
            # its own session: a terminal's Ctrl-C reaches the front alone, which drains
            # and then stops the replicas (each one stopping by itself meanwhile would be
            # seen dead, and restarted, by the supervisor)
            start_new_session=True)
        replica.ready, replica.ready_at, replica.missed = False, None, 0
        replica.client = UnixHTTPClient(str(replica.socket))

    async def _retire(self, replica: Replica) -> None:
        replica.ready = False
        if replica.probe:
            replica.probe.cancel()
        proc = replica.process
        if proc and proc.poll() is None:
            proc.terminate()
            for _ in range(int(self.timeout * 10)):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                proc.kill()
        if replica.client:
            await replica.client.aclose()
        replica.socket.unlink(missing_ok=True)

    async def _supervise(self) -> None:
        while True:
            for replica in list(self.replicas):
                try:
                    await self._look_after(replica, time.monotonic())
                except Exception:  # (fork failing for want of memory): try again next tick
                    log.exception("supervising replica %d failed", replica.index)
            self.metrics.ready.set(sum(r.ready for r in self.replicas))
            await asyncio.sleep(0.1)

    async def _look_after(self, replica: Replica, now: float) -> None:
        """Restart ``replica`` if it died (backing off while it dies before it is ready or
        soon after), and probe it: until it is ready, then every ``PROBE_S`` seconds. A
        probe runs as a task of its own, so one hung replica holds up no other's care."""
        proc = replica.process
        if proc is not None and proc.poll() is not None:  # died: restart it
            replica.ready = False
            quick = replica.ready_at is None or now - replica.ready_at < 10
            replica.failures = replica.failures + 1 if quick else 1
            replica.retry_at = now + min(2.0 ** (replica.failures - 1) - 1, 30.0)
            replica.process = None
            if replica.probe:
                replica.probe.cancel()
            if replica.client:
                await replica.client.aclose()  # closes idle connections: never blocks
        if replica.process is None:
            if now >= replica.retry_at:
                self.metrics.restarts.inc()
                self._spawn(replica)
            return
        if replica.ready and replica.ready_at is not None and now - replica.ready_at >= 10:
            replica.failures = 0
        due = not replica.ready or now - replica.probed_at >= PROBE_S
        if due and (replica.probe is None or replica.probe.done()):
            replica.probed_at = now
            replica.probe = asyncio.get_running_loop().create_task(self._check(replica))

    async def _check(self, replica: Replica) -> None:
        """Probe ``replica`` once and act on the answer. A ready replica that misses
        ``MISSES`` probes in a row (its event loop is stuck) leaves the rotation until it
        answers again, unless it is the last one ready; one that has answered nothing for
        the request timeout (each request it held has had its 504 by then), and at least
        ``HUNG_S``, is killed, so the supervisor restarts it."""
        process = replica.process
        status = (await self._get(replica, "/readyz", PROBE_TIMEOUT_S, [PROBE_HEADER]))[0]
        if replica.process is not process or process is None:  # restarted meanwhile
            return
        now = time.monotonic()
        if status == 0:
            replica.missed += 1
            if replica.missed < MISSES:
                return
            if replica.ready and self.ready > 1:
                replica.ready = False
                log.warning("replica %d has not answered for %d probes: out of rotation",
                            replica.index, replica.missed)
            silent = now - replica.answered_at
            if replica.ready_at is not None and silent > max(self.timeout, HUNG_S):
                log.warning("replica %d has not answered for %.0f s: restarting it",
                            replica.index, silent)
                process.kill()
            return
        replica.missed, replica.answered_at = 0, now
        replica.ready = status == 200
        if replica.ready and replica.ready_at is None:
            replica.ready_at = now

    async def _get(self, replica: Replica, path: str, timeout: float = 2.0,
                   headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes]:
        """A small GET to one replica (status 0 when it does not answer in ``timeout``)."""
        if replica.client is None:
            return 0, b""
        try:
            response = await asyncio.wait_for(
                replica.client.send("GET", path, headers or []), timeout)
            return response.status, await asyncio.wait_for(response.read(), timeout)
        except (UpstreamError, OSError, asyncio.TimeoutError):
            return 0, b""

    @property
    def ready(self) -> int:
        return sum(r.ready for r in self.replicas)

    def pick(self) -> Replica | None:
        """The ready replica with the fewest requests in flight (round-robin among equals)."""
        ready = [r for r in self.replicas if r.ready]
        if not ready:
            return None
        self._next += 1
        return min(ready, key=lambda r: (r.in_flight, (r.index - self._next) % len(ready)))

    # -- HTTP -----------------------------------------------------------------------------
    async def forward(self, request: Request, path: str | None = None,
                      body: bytes | None = None,
                      extra_headers: dict[str, str | None] | None = None) -> Response:
        route = path or request.scope["path"]
        replica = self.pick()
        if replica is None or replica.client is None:
            return unavailable("No replica is ready yet.", "Poll /readyz until it answers 200.",
                               route)
        if body is None:
            body = await request.body()
        extra = {k.lower().encode("latin-1"): v for k, v in (extra_headers or {}).items()}
        raw = [*_passed(request.scope["headers"], drop=extra),  # repeated headers stay so
               *((k, v.encode("latin-1")) for k, v in extra.items() if v is not None)]
        query = request.scope.get("query_string", b"").decode("latin-1")
        # the path as it came, encoded again: decoded, 'a b' or 'é' is not a request target
        # (h11 refuses it) and '%3F' would become the start of a query
        target = quote(route, safe=_PATH_SAFE) + (f"?{query}" if query else "")
        client = replica.client
        replica.in_flight += 1
        released = False
        try:
            sending = asyncio.ensure_future(client.send(request.method, target, raw, body))
            gone = asyncio.ensure_future(_disconnected(request))
            done, _ = await asyncio.wait({sending, gone}, timeout=self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if sending not in done:  # the caller went away, or no answer in time
                sending.cancel()
                with contextlib.suppress(BaseException):
                    await sending
                if gone in done:  # cancelling upstream makes the replica drop its work
                    return Response(status_code=499)
                raise asyncio.TimeoutError
            upstream = sending.result()
            out = _passed(upstream.headers, drop=_SERVERS_OWN)
            if (upstream.header(b"content-type") or b"").startswith(b"text/event-stream"):
                released = True
                streamed = StreamingResponse(self._relay(replica, upstream),
                                             status_code=upstream.status)
                streamed.raw_headers = out
                return streamed
            content = await asyncio.wait_for(upstream.read(), self.timeout)
            response = Response(content, status_code=upstream.status)
            length = [h for h in response.raw_headers if h[0] == b"content-length"]
            if request.method == "HEAD":  # no body came: the length is the replica's to say
                sent = upstream.header(b"content-length")
                length = [(b"content-length", sent)] if sent is not None else []
            response.raw_headers = [*out, *length]
            return response
        except asyncio.TimeoutError:
            return protocol_error(route, 504, "RequestTimeout",
                                  f"No answer within {self.timeout:.0f} s.",
                                  "Retry later, or send fewer images per request.")
        except UpstreamError:  # the replica died or closed the connection mid-request
            self.metrics.lost.inc()
            replica.ready = replica.ready and replica.process is not None \
                and replica.process.poll() is None
            return unavailable(f"Replica {replica.index} failed during the request.",
                               path=route)
        finally:
            if not released:
                replica.in_flight -= 1

    async def _relay(self, replica: Replica, upstream: UpstreamResponse) -> Any:
        try:
            async for chunk in upstream.chunks():
                yield chunk
        except UpstreamError:
            self.metrics.lost.inc()  # a stream cut short: the client sees the stream end
        finally:
            replica.in_flight -= 1

    async def metrics_text(self) -> bytes:
        """The pool's own metrics, then every ready replica's, labelled with its index."""
        from prometheus_client import generate_latest

        from kaon.serve.metrics import merge

        texts: dict[str, str] = {}
        for replica in self.replicas:
            if replica.ready:
                status, body = await self._get(replica, "/metrics")
                if status == 200:
                    texts[str(replica.index)] = body.decode()
        return generate_latest(self.metrics.registry) + merge(texts)

    # -- WebSocket ------------------------------------------------------------------------
    async def forward_ws(self, websocket: WebSocket, path: str | None = None,
                         query: str | None = None) -> None:
        """Relay a WebSocket stream to one replica, both ways, until either side closes.

        The replica's answers reach the client as the replica gave them: a refused handshake
        as its HTTP status and body, a close as its code and reason (a stream closed for a bad
        frame stays 1003). Only a replica that goes away without a close closes the client's
        stream with 1011 and "reopen".
        """
        from starlette.websockets import WebSocketDisconnect
        from websockets.asyncio.client import unix_connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

        replica = self.pick()
        if replica is None:
            await refuse_handshake(websocket, unavailable("No replica is ready."))
            return
        query = websocket.url.query if query is None else query
        uri = f"ws://replica{path or websocket.url.path}" + (f"?{query}" if query else "")
        replica.in_flight += 1
        accepted = False
        try:
            # uncompressed, as every Kaon server: kaon.serve.protocols.stream says why
            async with unix_connect(str(replica.socket), uri, max_size=None, open_timeout=5,
                                    compression=None) as upstream:
                await websocket.accept()
                accepted = True

                async def up() -> None:
                    with contextlib.suppress(ConnectionClosed):  # down() relays the close
                        while True:
                            message = await websocket.receive()
                            if message["type"] == "websocket.disconnect":  # its code on
                                code = int(message.get("code") or 1000)
                                await upstream.close(code if code not in (1005, 1006)
                                                     else 1000)
                                return
                            data = message.get("bytes")
                            await upstream.send(data if data is not None
                                                else message.get("text", ""))

                async def down() -> None:
                    # the replica closed (relayed below), or the client left (nothing to tell)
                    with contextlib.suppress(ConnectionClosed, WebSocketDisconnect):
                        async for message in upstream:
                            if isinstance(message, bytes):
                                await websocket.send_bytes(message)
                            else:
                                await websocket.send_text(message)
                    closed = upstream.protocol.close_rcvd  # None: no close frame came
                    if closed is None:  # no close frame: the replica died
                        await close_quietly(websocket, 1011, "replica failed; reopen the stream")
                    else:
                        await close_quietly(websocket, closed.code, closed.reason)

                relay, reader = asyncio.ensure_future(down()), asyncio.ensure_future(up())
                await asyncio.wait([relay, reader], return_when=asyncio.FIRST_COMPLETED)
                if reader.done() and not relay.done():  # the client left: let the close finish
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(relay), 5)
                for task in (relay, reader):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task  # an error of the relay's own surfaces here
        except InvalidStatus as exc:  # the replica refused the handshake (404, 400, 503, ...)
            refused = exc.response
            headers = {k: v for k, v in refused.headers.raw_items()
                       if k.lower() not in _HOP_BY_HOP and k.lower() != "date"}
            await refuse_handshake(websocket, Response(
                bytes(refused.body or b""), status_code=refused.status_code, headers=headers))
        except (OSError, WebSocketException, asyncio.TimeoutError):
            if accepted:
                await close_quietly(websocket, 1011, "replica failed; reopen the stream")
            else:  # the replica went away before the stream opened: a 503 to retry
                await refuse_handshake(websocket, unavailable(
                    f"Replica {replica.index} did not take the stream."))
        finally:
            replica.in_flight -= 1


def _passed(headers: Any, drop: Any = ()) -> list[tuple[bytes, bytes]]:
    """``headers`` (raw pairs) less the hop-by-hop ones and those named in ``drop``, in
    order and with repeats (two ``Set-Cookie`` stay two)."""
    return [(k.lower(), v) for k, v in headers
            if k.lower().decode("latin-1") not in _HOP_BY_HOP and k.lower() not in drop]


async def _disconnected(request: Request) -> None:
    """Returns once the caller has gone away (its body was already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
