"""The front of ``kaon serve --replicas N``: one HTTP port before N replica processes.

The front owns the port, the body limit and the access log; it forwards each request (and
each WebSocket stream) to a replica through :class:`~kaon.serve.pool.ReplicaPool`. Because
the front outlives its replicas, a replica killed mid-request costs that request a 503 with
Retry-After instead of a reset connection, and the replica comes back on its own.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from kaon.procs import freeze_heap
from kaon.serve import logs
from kaon.serve.asgi import METHODS, held, http_error, take_request
from kaon.serve.fastapi_app import new_app
from kaon.serve.pool import ReplicaPool
from kaon.serve.protocols.stream import MAX_FRAME_BYTES

MAX_CONNECTIONS = 4096  # open connections + tasks per server process; past it uvicorn sends 503
#: uvicorn options every Kaon server shares (`kaon serve`, its front, `kaon up`): the bound on
#: connections, no WebSocket compression (kaon.serve.protocols.stream says why), and no
#: WebSocket message over the largest stream frame (uvicorn's own bound is 16 MiB: a message
#: past it is closed with 1009 before it is all read)
SERVER_OPTIONS: dict[str, Any] = {"log_level": "warning", "limit_concurrency": MAX_CONNECTIONS,
                                  "ws_per_message_deflate": False,
                                  "ws_max_size": MAX_FRAME_BYTES}


class Forward:
    """Plain ASGI ahead of FastAPI: every HTTP request but the front's own routes goes
    straight to a replica, with its request id and access-log line. FastAPI's routing,
    dependency and middleware layers would cost about 40 µs a request here."""

    OWN = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, pool: ReplicaPool, max_body: int) -> None:
        self.app, self.pool, self.max_body = app, pool, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OWN \
                or scope["method"] not in METHODS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        taken = await take_request(scope, receive, send, self.max_body)
        if taken is None:  # answered 413, or the caller left
            return
        request, rid, body = taken
        with held(body):
            response = await self.pool.forward(request, body=body,
                                               extra_headers={"x-request-id": rid})
            response.headers["X-Request-ID"] = rid
            await response(scope, receive, send)
        logs.access({"request_id": rid, "method": scope["method"], "path": scope["path"],
                     "status": response.status_code,
                     "ms": round((time.perf_counter() - started) * 1000, 3)})


def create_front(pool: ReplicaPool, max_body: int) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pool.start()
        freeze_heap()
        yield
        await pool.stop()  # each replica drains its in-flight work before it exits

    app = new_app(title="Kaon front", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # /docs and /openapi.json come from a replica
    app.add_middleware(Forward, pool=pool, max_body=max_body)  # bounds every body it takes
    app.add_exception_handler(StarletteHTTPException, http_error)  # a replica's format
    app.state.pool = pool

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, total = pool.ready, len(pool.replicas)
        body: dict[str, Any] = {"status": "ready" if ready else "not ready",
                                "replicas_ready": ready, "replicas": total}
        return JSONResponse(status_code=200 if ready else 503, content=body)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await pool.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.websocket("/{path:path}")
    async def stream(websocket: WebSocket, path: str) -> None:
        await pool.forward_ws(websocket)

    return app


def run(config: dict[str, Any], replicas: int, host: str, port: int, max_body: int,
        timeout: float) -> None:
    """Serve until Ctrl-C: the front on ``host:port``, ``replicas`` processes behind it."""
    import uvicorn

    from kaon.serve.factory import budget_bodies

    budget_bodies(config)  # the front holds each body until its replica has answered
    pool = ReplicaPool(config, replicas, timeout=timeout + 5.0)
    uvicorn.run(create_front(pool, max_body), host=host, port=port,
                timeout_graceful_shutdown=int(timeout) + 10, **SERVER_OPTIONS)
