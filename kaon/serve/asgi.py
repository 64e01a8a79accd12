"""Plain-ASGI pieces shared by every Kaon server: the body limit and its reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from kaon.errors import one_line
from kaon.serve import logs

# what the forwarding paths pass on; others get FastAPI's 404/405
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: the header of the replica pool's health probes, which a server leaves out of its log
PROBE_HEADER = (b"x-kaon-probe", b"1")


class BodyBudget:
    """The bytes of request bodies one server process holds at once: those being read and
    those read whose request is not answered yet (waiting for the model, or for a replica).
    The limit per body bounds one request; this bounds them all, so 4,096 connections each
    sending 16 MiB slowly cannot take 64 GiB. Past it a request is answered 503 with
    Retry-After, which every HTTP client library knows to retry."""

    def __init__(self, total: int) -> None:
        self.total, self.held = total, 0

    def take(self, size: int, mine: int = 0) -> bool:
        """Take ``size`` more bytes for a body that holds ``mine`` already. A body alone is
        always let in (up to its own limit), so a limit above the budget still works."""
        if self.held + size > self.total and self.held > mine:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


#: this process's budget: 512 MiB (32 bodies at the default 16 MiB limit) unless
#: ``kaon serve --max-bodies-mb`` sets another
BODIES = BodyBudget(512 * 1024 * 1024)


@contextlib.contextmanager
def held(body: bytes, budget: BodyBudget | None = None) -> Iterator[None]:
    """``body``, read by :func:`read_body` (or :func:`take_request`), counts against
    ``budget`` (:data:`BODIES` by default) until the block, which answers it, ends."""
    try:
        yield
    finally:
        (budget or BODIES).give(len(body))


class Busy:
    """What :func:`read_body` returns when the body would pass :data:`BODIES`."""


BUSY = Busy()


class ErrorBody(BaseModel):
    """Kaon's error body, as :func:`route_error` writes it (V2 routes answer ``{"error"}``)."""

    error: str = Field(description="the error's class, e.g. NotFoundError")
    message: str
    hint: str | None = None


async def close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Close the client's side of a WebSocket, which may have gone already; ``reason`` is cut
    to the 123 bytes a close frame holds."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await websocket.close(code=code, reason=reason.encode()[:123].decode(errors="ignore"))


async def refuse_handshake(websocket: WebSocket, response: Response) -> None:
    """Refuse a WebSocket before accepting it, with ``response`` as the handshake's HTTP answer
    (the ASGI denial-response extension: the client sees 401, 404, 429 or 503 and the JSON
    body, as over HTTP). A server without the extension can only refuse with 403, so there
    the socket is accepted and closed with the message as the reason and 1013 (try again
    later) for a 503, else 1008 (policy)."""
    code = 1013 if response.status_code == 503 else 1008
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
        return
    await websocket.accept()
    reason = response.body.decode("utf-8", "replace")[:120] if response.body else ""
    await websocket.close(code=code, reason=reason)


def is_v2(path: str) -> bool:
    """The Open Inference Protocol's routes, whose errors are ``{"error": message}``."""
    return path == "/v2" or path.startswith("/v2/")


def protocol_error(path: str, status: int, error: str, message: str, hint: str | None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An error in the format of the protocol ``path`` belongs to: V2's ``{"error": message}``
    (which Triton's and KServe's clients show as the error), else Kaon's."""
    content = {"error": one_line(message, hint)} if is_v2(path) else {
        "error": error, "message": message, "hint": hint, **extra}
    return JSONResponse(status_code=status, content=content, headers=headers)


def route_error(request: Request, status: int, error: str, message: str, hint: str | None,
                headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An error in the protocol of the route asked for: V2's, else Kaon's."""
    return protocol_error(request.url.path, status, error, message, hint, headers, **extra)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (404, 405, ...) in Kaon's format, or V2's on its routes: the
    exception handler of every Kaon server, the replicas' front included."""
    assert isinstance(exc, StarletteHTTPException)
    hint = "See /docs for this server's routes." if exc.status_code in (404, 405) else None
    return route_error(request, exc.status_code, "HTTPError", str(exc.detail), hint,
                       headers=exc.headers)


class BodyLimit:
    """Answer 413 for a body larger than ``limit`` bytes, declared or streamed, and 503 past
    ``budget`` (this process's :data:`BODIES` unless given one of its own)."""

    def __init__(self, app: ASGIApp, limit: int, budget: BodyBudget | None = None) -> None:
        self.app, self.limit, self.budget = app, limit, budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Read the (bounded) body first, so a chunked upload past the limit is a clean 413.
        body = await read_body(scope, receive, self.limit, self.budget)
        if body is None:
            await self._reject(scope, send)
            return
        if body is BUSY:
            await busy(scope["path"])(scope, noop_receive, send)
            return
        if isinstance(body, dict):  # the client left: the app sees it go
            await self.app(scope, replay([body], receive), send)
            return
        with held(body, self.budget):
            first = {"type": "http.request", "body": body, "more_body": False}
            await self.app(scope, replay([first], receive), send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        await too_large(self.limit, path=scope.get("path", ""))({"type": "http"}, noop_receive,
                                                               send)


class CancelOnDisconnect:
    """Cancel a request's handler when its client goes away, so queued work is dropped.

    ASGI servers only report a disconnect to a ``receive()`` call; nothing cancels the
    handler. Sits inside :class:`BodyLimit` (the body has been read): one task per request
    waits on ``receive()`` and, if the client leaves before the response is complete,
    cancels the handler. A handler waiting on the batcher then drops its items before they
    reach the model. Such a request is logged with status 499 (``scope["kaon.gone"]``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body: dict[str, Any] | None = await receive()  # BodyLimit's replay: the whole body
        gone = asyncio.Event()
        complete = False
        handler = asyncio.current_task()
        assert handler is not None

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True  # from here the server's receive() answers "disconnect" too
            await send(message)

        async def app_receive() -> dict[str, Any]:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            await gone.wait()
            return {"type": "http.disconnect"}

        async def watch() -> None:
            if (await receive())["type"] == "http.disconnect" and not complete:
                scope["kaon.gone"] = True
                gone.set()
                handler.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.app(scope, app_receive, tracked_send)
        except asyncio.CancelledError:
            # not (only) ours, e.g. the server shutting down (cancelling() counts: 3.11+)
            if not gone.is_set() or getattr(handler, "cancelling", lambda: 1)() > 1:
                raise
            if hasattr(handler, "uncancel"):  # 3.11+; before, catching it is enough
                handler.uncancel()
        finally:
            watcher.cancel()


def too_large(limit: int, hint: str = "Send fewer images per request.",
              path: str = "") -> JSONResponse:
    """The 413 answer for a body over ``limit`` bytes, in the format of ``path``'s protocol."""
    return protocol_error(path, 413, "PayloadTooLarge", f"Request body is over {limit} bytes.",
                          hint)


def busy(path: str) -> JSONResponse:
    """The 503 for a body past this process's :data:`BODIES`, in ``path``'s protocol."""
    return protocol_error(path, 503, "UnavailableError",
                          "The server holds as many request bodies as it may at once.",
                          "Retry in a second.", headers={"Retry-After": "1"})


async def read_body(scope: Scope, receive: Receive, limit: int,
                    budget: BodyBudget | None = None) -> bytes | dict[str, Any] | Busy | None:
    """The whole request body, its bytes taken from ``budget`` (:data:`BODIES` by default;
    the caller gives them back once the request is answered); None when its declared
    length, or what arrives, passes ``limit`` bytes; :data:`BUSY` when it would pass the
    budget; a message that is not part of the body (the client went away) is returned as
    it came."""
    budget = budget or BODIES
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return None
    chunks: list[bytes] = []
    size, more, done = 0, True, False
    try:
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return dict(message)
            chunk = message.get("body", b"")
            if size + len(chunk) > limit:
                return None
            if not budget.take(len(chunk), mine=size):
                return BUSY
            size += len(chunk)
            chunks.append(chunk)
            more = message.get("more_body", False)
        done = True
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        if not done:  # refused, or the caller left: nothing is held for it
            budget.give(size)


def replay(messages: list[dict[str, Any]], receive: Receive) -> Receive:
    """A receive() that hands out ``messages`` first, then defers to the real one."""
    pending = list(messages)

    async def replay() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def noop_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def take_request(scope: Scope, receive: Receive, send: Send, limit: int,
                       path: str | None = None) -> tuple[Request, str, bytes] | None:
    """What a forwarding path needs of a request: the request, its id (the caller's
    ``X-Request-ID`` when well-formed) and its body, whose bytes the caller gives back to
    :data:`BODIES` once it has answered. None when the request is already dealt with: a body
    over ``limit`` (answered 413 here, with the id, and logged) or past the budget (503), or
    a caller that left before sending all of it. ``path`` is the route the request is for,
    when not its own path (a gateway's ``/d/NAME/v2/…`` is for ``/v2/…``): its protocol's
    error format is used."""
    request = Request(scope, receive)
    rid = logs.request_id(request.headers.get("x-request-id"))
    body = await read_body(scope, receive, limit)
    if isinstance(body, bytes):
        return request, rid, body
    if isinstance(body, dict):
        return None
    route = path or scope["path"]
    response = too_large(limit, path=route) if body is None else busy(route)
    response.headers["X-Request-ID"] = rid
    await response(scope, noop_receive, send)
    logs.access({"request_id": rid, "method": scope["method"], "path": scope["path"],
                 "status": response.status_code})
    return None
