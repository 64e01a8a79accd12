"""Write a service as a class: ``setup()`` once, ``@kaon.handler`` methods become endpoints.

    import kaon

    class Echo(kaon.Service):
        def setup(self) -> None:
            self.prefix = "echo: "

        @kaon.handler
        def say(self, text: str, times: int = 1) -> list[str]:
            return [self.prefix + text] * times

        @kaon.handler(batch=kaon.Batch(max_batch_size=16, max_wait_ms=5))
        def shout(self, texts: list[str]) -> list[str]:     # a batch in, a batch out
            return [t.upper() for t in texts]

        @kaon.handler
        def count(self, n: int):                               # a generator streams (SSE)
            yield from range(n)

``kaon serve path/to/file.py:Echo`` serves it: ``POST /say`` takes ``{"text": ..., "times": 2}``
and the request and response models (from the type hints) appear in the OpenAPI docs.
A batched handler takes one item per request (``{"text": ...}`` for ``texts: list[str]``) and
Kaon groups concurrent requests into the list it receives.

A handler may be ``async def`` (awaited on the event loop; a plain ``def`` runs in a worker
thread), an ``async def`` generator streams like a generator, and a batched handler may be
``async def`` too. ``kaon serve``'s ``--timeout`` and ``--max-queue`` bound every handler
(504 past the deadline, 503 with ``Retry-After`` past the bound; a stream has no deadline), and
its ``--max-batch-size`` and ``--max-wait-ms`` fill in what a handler's ``kaon.Batch`` leaves out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import inspect
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model
from pydantic.errors import PydanticSchemaGenerationError
from starlette.types import Receive, Scope, Send

from kaon.errors import ConfigError, KaonError
from kaon.serve.asgi import ErrorBody
from kaon.serve.batching import (
    ARRIVALS,
    Batcher,
    BatchPolicy,
    Overloaded,
    RequestTimeout,
    arrived,
)

_MARK = "__kaon_handler__"
log = logging.getLogger("kaon.serve")


@dataclass(frozen=True)
class Batch:
    """A batched handler's policy, e.g. ``kaon.Batch(max_batch_size=16, max_wait_ms=5)``.

    A field left ``None`` takes ``kaon serve``'s flag (``--max-batch-size``, ``--max-wait-ms``,
    ``--max-queue``, ``--timeout``); ``kaon.Batch()`` takes them all.
    """

    max_batch_size: int | None = None
    max_wait_ms: float | None = None
    max_queue: int | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        self.over(BatchPolicy())  # refuse a bad value where it is written

    def over(self, default: BatchPolicy) -> BatchPolicy:
        """This policy, with ``default``'s value for every field left ``None``."""
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        try:
            if given.get("timeout_s", 1) <= 0:
                raise ValueError("timeout_s must be > 0")
            return dataclasses.replace(default, **given)
        except ValueError:
            raise ConfigError(f"Invalid {self}.",
                              hint="max_batch_size and max_queue must be ≥ 1, max_wait_ms ≥ 0 "
                                   "and timeout_s > 0.") from None


def handler(fn: Callable[..., Any] | None = None, *, batch: Batch | BatchPolicy | None = None,
            path: str | None = None) -> Any:
    """Mark a method as an HTTP endpoint (``POST /{path or name}``)."""

    route = (path or "").strip("/")
    if path is not None and not route:
        raise ConfigError(f"@kaon.handler(path={path!r}) names no route.",
                          hint="Give a path such as 'hello' or 'v1/hello', or leave it out.")
    if route and not re.fullmatch(r"[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*", route):
        raise ConfigError(f"@kaon.handler(path={path!r}) is not a plain path: a route is "
                          "letters, digits and . _ ~ - between slashes (no {templates}, "
                          "spaces, ? or #).",
                          hint="Give a path such as 'hello' or 'v1/hello'; inputs go in the "
                               "JSON body, as the handler's arguments.")

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        if isinstance(f, (staticmethod, classmethod)):  # it would be lost without a word
            raise ConfigError(f"@kaon.handler is on a {type(f).__name__} "
                              f"({f.__func__.__name__}); handlers are plain methods.",
                              hint="Drop @staticmethod/@classmethod: def name(self, ...).")
        setattr(f, _MARK, {"batch": batch, "path": route or f.__name__})
        return f

    return mark(fn) if fn is not None else mark


class Service:
    """Subclass, implement ``setup()`` (run once before the first request) and handlers."""

    def setup(self) -> None:
        """Load models and other state. Runs once, before the server reports ready."""


@dataclass
class _Endpoint:
    name: str
    path: str
    method: Callable[..., Any]
    request: type[BaseModel]
    response: Any
    batch: Batch | BatchPolicy | None
    streams: bool
    is_async: bool  # ``async def``: awaited on the event loop, not run in a thread


def endpoints(service: Service) -> list[_Endpoint]:
    """The handlers of a service, with request models built from their signatures."""
    found = [_endpoint(service, name, member, spec)
             for name, member in inspect.getmembers(type(service), predicate=inspect.isfunction)
             if (spec := getattr(member, _MARK, None)) is not None]
    if not found:
        raise ConfigError(f"{type(service).__name__} has no @kaon.handler methods.",
                          hint="Decorate at least one method with @kaon.handler.")
    seen: dict[str, str] = {}
    for ep in found:
        if ep.path in seen:
            raise ConfigError(f"Handlers {seen[ep.path]} and {ep.name} both serve /{ep.path}.",
                              hint="Give one of them another path=.")
        seen[ep.path] = ep.name
    return found


def _endpoint(service: Service, name: str, member: Callable[..., Any],
              spec: dict[str, Any]) -> _Endpoint:
    batch = spec["batch"]
    streams = inspect.isgeneratorfunction(member) or inspect.isasyncgenfunction(member)
    if batch is not None and streams:
        raise ConfigError(f"Batched handler {name} is a generator; a batch cannot stream.",
                          hint="Return one list with a result per item, or drop batch=.")
    hints = get_type_hints(member)
    try:
        request = create_model(f"{type(service).__name__}_{name}_Request",
                               __config__=ConfigDict(extra="forbid"),
                               **_request_fields(name, member, hints, batched=batch is not None))
    except PydanticSchemaGenerationError as exc:
        raise ConfigError(f"Handler {name}: a parameter's type cannot come from JSON "
                          f"({_first_line(exc)}).",
                          hint="Use JSON types (int, float, str, bool, list, dict) or pydantic "
                               "models, e.g. list[float] for an array.") from None
    returns = hints.get("return", Any)
    if batch is not None and get_origin(returns) is list:
        returns = get_args(returns)[0]
    try:
        if not streams:  # (a stream's events are each encoded as it comes)
            TypeAdapter(returns)
    except PydanticSchemaGenerationError as exc:
        raise ConfigError(f"Handler {name}: its return type cannot be sent as JSON "
                          f"({_first_line(exc)}).",
                          hint="Return JSON types or pydantic models, e.g. array.tolist() "
                               "as list[float].") from None
    is_async = inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
    return _Endpoint(name, spec["path"], getattr(service, name), request, returns, batch,
                     streams, is_async)


def _first_line(exc: Exception) -> str:
    """pydantic's reason, without its advice for pydantic models."""
    return str(exc).strip().splitlines()[0].split(". ")[0][:200]


def _request_fields(name: str, member: Callable[..., Any], hints: dict[str, Any],
                    batched: bool) -> dict[str, Any]:
    params = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise ConfigError(f"Handler {name}: parameter {p} cannot come from a JSON field.",
                              hint="Use plain named parameters (no /, *args or **kwargs).")
        if p.name.startswith("_") or (p.name.startswith("model_") and hasattr(BaseModel,
                                                                               p.name)):
            raise ConfigError(f"Handler {name}: parameter name {p.name!r} is reserved by "
                              "pydantic (a leading underscore, or a BaseModel model_ member).",
                              hint="Rename the parameter; its name is the JSON field's.")
        if p.name not in hints:
            raise ConfigError(f"Handler {name}: parameter {p.name!r} has no type hint.",
                              hint="Annotate every parameter; the hints make the API.")
        annotation = hints[p.name]
        if batched:  # a batched handler receives lists of items
            if len(params) != 1 or get_origin(annotation) is not list:
                raise ConfigError(f"Batched handler {name} must take one list parameter.",
                                  hint="e.g. def shout(self, texts: list[str]) -> list[str]")
            annotation = get_args(annotation)[0]
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)
    return fields


def router(service: Service, batchers: list[Batcher[Any, Any]],
           policy: BatchPolicy | None = None) -> APIRouter:
    """Routes for every handler; batched handlers get a Batcher (started by the app).
    ``policy`` (``kaon serve``'s flags) bounds every handler and fills in ``kaon.Batch``."""
    api = APIRouter(tags=[type(service).__name__])
    policy = policy or BatchPolicy()
    for ep in endpoints(service):
        responses: dict[int | str, dict[str, Any]] = {**_ERRORS}
        if ep.streams:
            responses[200] = {"description": "Server-Sent Events: one `data:` line per item, "
                                             "then `event: end` (or `event: error`)",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}}
        raw = _answers_bytes(ep)
        if raw:
            responses[200] = {"description": "the handler's bytes, as they are",
                              "content": {"application/octet-stream": {
                                  "schema": {"type": "string", "format": "binary"}}}}
        api.add_api_route(f"/{ep.path}", _route(ep, policy, batchers), methods=["POST"],
                          name=ep.name, summary=(ep.method.__doc__ or ep.name).strip(),
                          response_model=None if ep.streams or raw else ep.response,
                          response_class=(StreamingResponse if ep.streams
                                          else Response if raw else JSONResponse),
                          responses=responses)
    return api


_ERRORS: dict[int | str, dict[str, Any]] = {
    500: {"model": ErrorBody, "description": "the handler raised: the log has the traceback"},
    503: {"model": ErrorBody,
          "description": "not ready (setup() runs or failed), or over the queue bound"},
    504: {"model": ErrorBody, "description": "no result within the timeout"}}


def _route(ep: _Endpoint, policy: BatchPolicy,
           batchers: list[Batcher[Any, Any]]) -> Callable[..., Any]:
    route: Callable[..., Any]
    if ep.batch is not None:
        batch = ep.batch if isinstance(ep.batch, BatchPolicy) else ep.batch.over(policy)
        route = _batched_route(ep, batch, batchers)
    elif ep.streams:
        route = _streamed_route(ep, _Slots(policy.max_queue))
    else:
        route = _plain_route(ep, _Slots(policy.max_queue), policy.timeout_s)
    if _answers_bytes(ep):
        returns_bytes = route

        async def route(body: BaseModel) -> Response:
            return _raw(ep.name, await returns_bytes(body))

    # FastAPI reads the body model from the signature: give it the real class
    body = inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             annotation=ep.request)
    if not any(f.is_required() for f in ep.request.model_fields.values()):
        inner = route  # every field has a default: an empty body is a valid call

        async def route(body: BaseModel | None = None) -> Any:
            return await inner(ep.request() if body is None else body)

        body = body.replace(annotation=ep.request | None, default=None)
    route.__signature__ = inspect.Signature([body])  # type: ignore[attr-defined]
    return route


def _answers_bytes(ep: _Endpoint) -> bool:
    """A handler annotated ``-> bytes`` (a batched one: ``-> list[bytes]``) answers its bytes
    as they are, ``application/octet-stream``: an image, a file, audio. (As a JSON string,
    bytes that are not UTF-8 could not be sent at all.)"""
    return ep.response is bytes and not ep.streams


def _raw(name: str, value: Any) -> Response:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"Handler {name} is annotated -> bytes but returned "
                        f"{type(value).__name__}.")
    return Response(bytes(value), media_type="application/octet-stream")


def _batched_route(ep: _Endpoint, policy: BatchPolicy,
                   batchers: list[Batcher[Any, Any]]) -> Callable[..., Awaitable[Any]]:
    (param,) = ep.request.model_fields
    batcher: Batcher[Any, Any] = (
        _LoopBatcher(ep.method, policy) if ep.is_async
        else Batcher(lambda items: ep.method(list(items)), policy, arrivals=ARRIVALS))
    batchers.append(batcher)

    async def batched(body: BaseModel) -> Any:
        return await batcher.submit(getattr(body, param))

    return batched


def _plain_route(ep: _Endpoint, slots: _Slots,
                 timeout: float) -> Callable[..., Awaitable[Any]]:
    async def plain(body: BaseModel) -> Any:
        arrived()  # to no batcher: batched handlers need not wait for it
        slots.take()
        try:
            call = (ep.method(**_fields(body)) if ep.is_async
                    else run_in_threadpool(ep.method, **_fields(body)))
            task = asyncio.ensure_future(call)
        except BaseException:
            slots.give()
            raise
        task.add_done_callback(slots.give)  # free when the call ends, not when the request does
        return await _within(task, timeout, ep.name, cancel=ep.is_async)

    return plain


def _streamed_route(ep: _Endpoint, slots: _Slots) -> Callable[..., Awaitable[Any]]:
    async def streamed(body: BaseModel) -> StreamingResponse:
        arrived()  # to no batcher: batched handlers need not wait for it
        items = ep.method(**_fields(body))  # a generator: nothing runs before the first event
        return _EventStream(_sse(items), slots)

    return streamed


class _Slots:
    """At most ``limit`` calls of one handler running or waiting to run; past it, 503."""

    def __init__(self, limit: int) -> None:
        self.limit, self.taken = limit, 0

    def take(self) -> None:
        if self.taken >= self.limit:
            raise Overloaded(self.taken, retry_after=1.0)
        self.taken += 1

    def give(self, *_: object) -> None:
        self.taken -= 1


_abandoned: set[asyncio.Future[Any]] = set()  # calls that outlive their request


async def _within(task: asyncio.Future[Any], timeout: float, name: str, cancel: bool) -> Any:
    """``task``'s result, or 504 after ``timeout`` seconds.

    A coroutine is cancelled when nobody waits for it any more; a thread cannot be, so a
    timed-out ``def`` handler runs to its end (and holds its slot until then).
    """
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:  # the client went away
        _abandon(task, cancel)
        raise
    if not done:
        _abandon(task, cancel)
        raise RequestTimeout(f"No result from {name} within {timeout:.1f}s.",
                             hint="Retry later; if the handler needs longer, raise "
                                  "`kaon serve --timeout`.")
    return task.result()


def _abandon(task: asyncio.Future[Any], cancel: bool) -> None:
    if cancel:
        task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody is told about it, and asyncio need not warn


class _LoopBatcher(Batcher[Any, Any]):
    """A Batcher for an ``async def`` batch handler: each batch is awaited on the event loop
    while the batcher's worker thread waits for it, so batches still run one at a time."""

    def __init__(self, method: Callable[[list[Any]], Coroutine[Any, Any, Sequence[Any]]],
                 policy: BatchPolicy) -> None:
        super().__init__(self._on_loop, policy, arrivals=ARRIVALS)
        self._method = method
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        super().start()

    def _on_loop(self, items: Sequence[Any]) -> Sequence[Any]:
        assert self._loop is not None, "start() the batcher first"
        return asyncio.run_coroutine_threadsafe(self._method(list(items)), self._loop).result()


class _EventStream(StreamingResponse):
    """Server-Sent Events holding one of the handler's slots while they are sent. The slot is
    taken here, not in the route, so that a request cancelled between the two cannot keep it;
    past the bound, the app's handler answers the ``Overloaded`` with a 503."""

    def __init__(self, events: AsyncIterator[bytes], slots: _Slots) -> None:
        super().__init__(events, media_type="text/event-stream")
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._slots.take()
        try:
            await super().__call__(scope, receive, send)
        finally:  # a client that left: close the handler's generator (its finally runs) now
            with contextlib.suppress(RuntimeError, ValueError):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            self._slots.give()


def _fields(body: BaseModel) -> dict[str, Any]:
    """The validated fields as Python objects (nested models stay models)."""
    return {name: getattr(body, name) for name in type(body).model_fields}


_END = object()


async def _sse(items: Iterator[Any] | AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """Server-Sent Events: one ``data:`` line per yielded item, then ``event: end``. A handler
    that raises, or yields what is not JSON (NaN, infinity), ends the stream with ``event:
    error`` and ``{"error", "message", "hint"}`` (the status line, 200, went out with the
    headers), and its traceback goes to the server's log."""
    try:
        while (item := await _next(items)) is not _END:
            payload = item.model_dump(mode="json") if isinstance(item, BaseModel) else item
            yield f"data: {json.dumps(payload, default=str, allow_nan=False)}\n\n".encode()
        yield b"event: end\ndata: {}\n\n"
    except Exception as exc:  # the client hears of it; the log has the traceback
        log.exception("streaming handler failed")
        yield f"event: error\ndata: {json.dumps(_stream_error(exc), default=str)}\n\n".encode()
    finally:  # a client that went away closes the handler's generator (its finally runs)
        await _close(items)


def _stream_error(exc: Exception) -> dict[str, Any]:
    """What a stream's client is told of a failure: a KaonError's own message, else as the
    app's answer to a defect (the type, not the text: that stays in the log)."""
    if isinstance(exc, KaonError):
        return exc.to_dict()
    if isinstance(exc, ValueError) and "JSON compliant" in str(exc):
        return {"error": "InternalError", "hint": "Yield finite numbers, or None.",
                "message": "The handler yielded a value that is not JSON (NaN or infinity)."}
    return {"error": "InternalError", "hint": "The server's log has the traceback.",
            "message": f"The handler failed: {type(exc).__name__}; the stream ends here."}


async def _next(items: Iterator[Any] | AsyncIterator[Any]) -> Any:
    """The next item: an async generator's on the loop, a generator's in a worker thread."""
    if isinstance(items, AsyncIterator):
        return await anext(items, _END)
    return await run_in_threadpool(next, items, _END)


async def _close(items: Iterator[Any] | AsyncIterator[Any]) -> None:
    if inspect.isasyncgen(items):
        await items.aclose()
    elif inspect.isgenerator(items):
        items.close()


def load_service(target: str) -> Service:
    """``path/to/file.py:ClassName`` → an instance (not yet set up)."""
    file, sep, cls_name = target.rpartition(":")
    path = Path(file)
    if not sep or not path.suffix == ".py" or not path.is_file():
        raise ConfigError(f"{target!r} is not FILE.py:ClassName of an existing file.",
                          hint="Example: kaon serve examples/services/echo.py:Echo")
    spec = importlib.util.spec_from_file_location(f"kaon_user_service_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"{path} has no kaon.Service subclass named {cls_name!r}.",
                          hint="Subclass kaon.Service and decorate methods with @kaon.handler.")
    try:
        inspect.signature(cls).bind()
    except TypeError:
        needed = ", ".join(str(p) for p in inspect.signature(cls).parameters.values())
        raise ConfigError(f"{cls_name}() needs arguments ({needed}); kaon serve makes it with "
                          "none.",
                          hint="Give its __init__ arguments defaults, or read settings in "
                               "setup() (from the environment, say).") from None
    return cls()
