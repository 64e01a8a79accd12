"""The HTTP front: FastAPI over one :class:`~kaon.serve.runtime.Runtime`.

Routes: Kaon's JSON predict (``/v1/models/{name}/predict``), the Open Inference Protocol
(``/v2/...``), ``/healthz``, ``/readyz`` (200 only once weights are loaded), ``/metrics``
(Prometheus) and the OpenAPI docs at ``/docs``. Requests are batched dynamically.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaon.errors import KaonError
from kaon.procs import freeze_heap
from kaon.serve import logs
from kaon.serve.asgi import (
    PROBE_HEADER,
    BodyLimit,
    CancelOnDisconnect,
    http_error,
    is_v2,
)
from kaon.serve.asgi import route_error as _error
from kaon.serve.batching import ARRIVALS, Batcher, BatchPolicy, Overloaded
from kaon.serve.fastapi_app import new_app
from kaon.serve.metrics import ServerMetrics
from kaon.serve.predictor import Predictor
from kaon.serve.protocols import kaon_json, stream, v2
from kaon.serve.runtime import Runtime
from kaon.serve.service import Service
from kaon.serve.service import router as service_router

log = logging.getLogger("kaon.serve")

MAX_BODY_BYTES = 16 * 1024 * 1024


class Observe:
    """Latency histogram per route, ``X-Request-ID`` and one JSON access-log line per request.

    Plain ASGI rather than ``@app.middleware("http")``: no extra task and stream per request.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = dict(scope.get("headers", [])).get(b"x-request-id")
        rid = logs.request_id(incoming.decode("latin-1") if incoming else None)
        status = 500

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [
                    *message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        # a POST is on its way to a batcher until it submits (decision 0028)
        arriving = ARRIVALS.expect() if scope["method"] == "POST" else contextlib.nullcontext()
        try:
            with arriving:
                await self.app(scope, receive, send_with_id)
        finally:
            if scope.get("kaon.gone"):
                status = 499  # the client closed the request (nginx's code)
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.latency.labels(route, str(status)).observe(seconds)
            if PROBE_HEADER not in scope.get("headers", ()):  # the front's probes: unlogged
                logs.access({"request_id": rid, "method": scope["method"],
                             "path": scope["path"], "route": route, "status": status,
                             "ms": round(seconds * 1000, 3)})


class UntilReady:
    """A service answers POSTs with 503 until ``setup()`` has run (plain ASGI: the handler
    stays in the request's own task, where a disconnect can cancel it)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not self.state["ready"]:
            error = self.state["error"]
            if error is None:
                response = JSONResponse(status_code=503, headers={"Retry-After": "1"}, content={
                    "error": "UnavailableError",
                    "message": "The service is not ready: setup() runs.",
                    "hint": "Poll /readyz until it answers 200."})
            else:  # for good: no Retry-After
                response = JSONResponse(status_code=503, content={
                    "error": "UnavailableError",
                    "message": f"The service is not ready: setup() failed: "
                               f"{type(error).__name__}.",
                    "hint": "It will not become ready: the server's log has the traceback; "
                            "restart it once fixed."})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(load: Callable[[], Predictor], max_body: int = MAX_BODY_BYTES,
               policy: BatchPolicy | None = None) -> FastAPI:
    """A registered model's server; ``load`` runs once in the background, ``/readyz`` waits."""
    metrics = ServerMetrics()
    runtime = Runtime(load, policy or BatchPolicy(), metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        yield
        await runtime.stop()  # drains queued and in-flight work

    def readiness() -> tuple[bool, dict[str, Any]]:
        if runtime.ready:
            p = runtime.predictor()
            return True, {"model": p.name, "version": p.version}
        return False, {"detail": str(runtime.error) if runtime.error else "loading"}

    def expected() -> str | None:
        p = runtime.predictor_or_none
        return None if p is None else (
            f"This model takes {p.signature.describe()}: send "
            '{"inputs": [IMAGE, ...]}, each IMAGE a base64 PNG/JPEG string or nested pixel '
            "lists shaped like the signature.")

    app = _base_app("Kaon model server", lifespan, metrics, max_body, readiness,
                    lambda: runtime.batcher.depth, expected=expected,
                    fast_paths=[
                        Middleware(kaon_json.FastPredict, runtime=runtime,
                                   errors=lambda exc: error_response(exc, metrics)),
                        Middleware(v2.FastInfer, runtime=runtime, max_body=max_body,
                                   errors=lambda exc: error_response(exc, metrics, v2=True))])
    app.include_router(kaon_json.router(runtime))
    app.include_router(v2.router(runtime, max_body))
    app.include_router(stream.router(runtime))
    app.state.runtime = runtime
    return app


def create_service_app(service: Service, max_body: int = MAX_BODY_BYTES,
                       policy: BatchPolicy | None = None) -> FastAPI:
    """A :class:`kaon.Service`'s server: ``setup()`` runs once in the background first.
    ``policy`` (``kaon serve``'s flags) bounds every handler and fills in ``kaon.Batch``."""
    metrics = ServerMetrics()
    batchers: list[Batcher[Any, Any]] = []
    # validates the handlers before serving
    routes = service_router(service, batchers, policy or BatchPolicy())
    state: dict[str, Any] = {"ready": False, "error": None}

    def setup() -> None:
        try:
            service.setup()
            freeze_heap()
            state["ready"] = True
        except Exception as exc:
            state["error"] = exc  # /readyz and every POST answer 503 with it from now on
            log.error("setup() of %s failed; the service stays not ready (restart it once "
                      "fixed)", type(service).__name__, exc_info=exc)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=setup, name="kaon-service-setup", daemon=True).start()
        for b in batchers:
            b.on_batch = metrics.observe_batch
            b.start()
        yield
        for b in batchers:
            await b.stop(drain=True)

    def readiness() -> tuple[bool, dict[str, Any]]:
        if state["ready"]:
            return True, {"service": type(service).__name__}
        return False, {"detail": str(state["error"]) if state["error"] else "setting up"}

    app = _base_app(f"Kaon service {type(service).__name__}", lifespan, metrics, max_body,
                    readiness, lambda: sum(b.depth for b in batchers),
                    fast_paths=[Middleware(UntilReady, state=state)], user_code=True)
    app.include_router(routes)
    return app


def error_response(exc: KaonError, metrics: ServerMetrics, v2: bool = False) -> JSONResponse:
    """A KaonError as the server's JSON error (the Open Inference Protocol's with ``v2``),
    with Retry-After on 503s."""
    headers = None
    if isinstance(exc, Overloaded):
        metrics.rejected.inc()
        headers = {"Retry-After": f"{exc.retry_after:.0f}"}
    elif exc.http_status == 503:
        headers = {"Retry-After": "1"}
    content = {"error": exc.message} if v2 else exc.to_dict()
    return JSONResponse(status_code=exc.http_status, content=content, headers=headers)


_UNPARSED = "There was an error parsing the body"  # FastAPI's 400, any cause


class CatchAll:
    """An exception no handler answered: a 500 in the route's protocol and the traceback in
    the log, and the connection kept. (Starlette's handler for ``Exception`` re-raises, and
    uvicorn then closes the keep-alive connection, which the replicas' front had pooled: the
    next request on it failed with 503.) A response already started cannot be taken back:
    then the exception goes on, and the connection closes."""

    def __init__(self, app: ASGIApp, user_code: bool = False) -> None:
        self.app, self.user_code = app, user_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            log.error("%s %s raised", scope["method"], scope["path"], exc_info=exc)
            name = type(exc).__name__
            if self.user_code:
                message, hint = (f"The handler failed on this request: {name}.",
                                 "The service's log has the traceback; check the input, or "
                                 "the handler.")
            else:
                message, hint = (f"The server failed on this request: {name}.",
                                 "This is a bug in the server; the log has the traceback.")
            await _error(Request(scope), 500, "InternalError", message, hint)(
                scope, receive, send)


def _base_app(title: str, lifespan: Any, metrics: ServerMetrics, max_body: int,
              readiness: Callable[[], tuple[bool, dict[str, Any]]],
              depth: Callable[[], int], fast_paths: Sequence[Middleware] = (),
              expected: Callable[[], str | None] = lambda: None,
              user_code: bool = False) -> FastAPI:
    """What every Kaon server has: body limit, metrics, error mapping, health and readiness.
    ``fast_paths``: middleware that see requests after the body limit, before FastAPI (the
    last one listed sees them first);
    ``expected``: what a predict body must hold (the hint of a 422), once known;
    ``user_code``: its routes run a user's handlers (whose exceptions are theirs)."""
    app = new_app(title=title, version="0.1.0", lifespan=lifespan)
    for fast in fast_paths:
        app.add_middleware(fast.cls, *fast.args, **fast.kwargs)
    app.add_middleware(CatchAll, user_code=user_code)
    app.add_middleware(CancelOnDisconnect)  # a client that leaves: its queued work is dropped
    app.add_middleware(BodyLimit, limit=max_body)

    app.add_middleware(Observe, metrics=metrics)

    @app.exception_handler(KaonError)
    async def _kaon_error(request: Request, exc: KaonError) -> JSONResponse:
        return error_response(exc, metrics, v2=is_v2(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")),
                   "type": str(e.get("type"))} for e in list(exc.errors())[:20]]
        where = "; ".join(f"{'.'.join(e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors[:3])
        hint = expected() if request.url.path.endswith("/predict") else None
        return _error(request, 422, "ValidationError", f"The request body is invalid: {where}.",
                      hint or "Fix the field(s) named; /docs describes each route's body.",
                      errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _UNPARSED and \
                request.url.path.endswith("/predict"):  # e.g. arrays nested past recursion
            return _error(request, 422, "ValidationError",
                          "The request body could not be read as a predict body.",
                          expected() or "Send {\"inputs\": [IMAGE, ...]}.")
        return await http_error(request, exc)

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        status = 400 if is_v2(request.url.path) else 422
        return _error(request, status, "SignatureError", "The request nests arrays too deeply.",
                      "Send each image as [H, W] or [C, H, W] numbers, or as base64 PNG/JPEG.")

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: weights loaded / setup() done",
             responses={503: {"description": "still loading, or loading failed"}})
    async def readyz() -> JSONResponse:
        ready, info = readiness()
        if ready:
            return JSONResponse({"status": "ready", **info})
        return JSONResponse(status_code=503, content={"status": "not ready", **info})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        metrics.queue_depth.set(depth())
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
