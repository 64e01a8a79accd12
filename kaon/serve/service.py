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
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, create_model

from kaon.errors import ConfigError
from kaon.serve.batching import Batcher, BatchPolicy

Batch = BatchPolicy  # kaon.Batch(max_batch_size=16, max_wait_ms=5): the same policy as serve's


_MARK = "__kaon_handler__"


def handler(fn: Callable[..., Any] | None = None, *, batch: Batch | None = None,
            path: str | None = None) -> Any:
    """Mark a method as an HTTP endpoint (``POST /{path or name}``)."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(f, _MARK, {"batch": batch, "path": path or f.__name__})
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
    batch: Batch | None
    streams: bool


def endpoints(service: Service) -> list[_Endpoint]:
    """The handlers of a service, with request models built from their signatures."""
    found = []
    for name, member in inspect.getmembers(type(service), predicate=inspect.isfunction):
        spec = getattr(member, _MARK, None)
        if spec is None:
            continue
        method = getattr(service, name)
        hints = get_type_hints(member)
        params = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
        fields: dict[str, Any] = {}
        for p in params:
            if p.name not in hints:
                raise ConfigError(f"Handler {name}: parameter {p.name!r} has no type hint.",
                                  hint="Annotate every parameter; the hints make the API.")
            annotation = hints[p.name]
            if spec["batch"] is not None:  # a batched handler receives lists of items
                if len(params) != 1 or get_origin(annotation) is not list:
                    raise ConfigError(f"Batched handler {name} must take one list parameter.",
                                      hint="e.g. def shout(self, texts: list[str]) -> list[str]")
                annotation = get_args(annotation)[0]
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (annotation, default)
        request = create_model(f"{type(service).__name__}_{name}_Request",
                               __config__=ConfigDict(extra="forbid"), **fields)
        returns = hints.get("return", Any)
        streams = inspect.isgeneratorfunction(member)
        if spec["batch"] is not None and get_origin(returns) is list:
            returns = get_args(returns)[0]
        found.append(_Endpoint(name, spec["path"], method, request, returns, spec["batch"],
                               streams))
    if not found:
        raise ConfigError(f"{type(service).__name__} has no @kaon.handler methods.",
                          hint="Decorate at least one method with @kaon.handler.")
    return found


def router(service: Service, batchers: list[Batcher[Any, Any]]) -> APIRouter:
    """Routes for every handler; batched handlers get a Batcher (started by the app)."""
    api = APIRouter(tags=[type(service).__name__])
    for ep in endpoints(service):
        api.add_api_route(f"/{ep.path}", _route(ep, batchers), methods=["POST"],
                          name=ep.name, summary=(ep.method.__doc__ or ep.name).strip(),
                          response_model=None if ep.streams else ep.response)
    return api


def _route(ep: _Endpoint, batchers: list[Batcher[Any, Any]]) -> Callable[..., Any]:
    from fastapi.concurrency import run_in_threadpool

    route: Callable[..., Any]
    if ep.batch is not None:
        (param,) = ep.request.model_fields
        batcher: Batcher[Any, Any] = Batcher(lambda items: ep.method(list(items)), ep.batch)
        batchers.append(batcher)

        async def batched(body: BaseModel) -> Any:
            return await batcher.submit(getattr(body, param))

        route = batched
    elif ep.streams:
        async def streamed(body: BaseModel) -> StreamingResponse:
            items = ep.method(**_fields(body))
            return StreamingResponse(_sse(items), media_type="text/event-stream")

        route = streamed
    else:
        async def plain(body: BaseModel) -> Any:
            return await run_in_threadpool(ep.method, **_fields(body))

        route = plain
    # FastAPI reads the body model from the signature: give it the real class
    route.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           annotation=ep.request)])
    return route


def _fields(body: BaseModel) -> dict[str, Any]:
    """The validated fields as Python objects (nested models stay models)."""
    return {name: getattr(body, name) for name in type(body).model_fields}


async def _sse(items: Iterator[Any]) -> AsyncIterator[bytes]:
    """Server-Sent Events: one ``data:`` line per yielded item, then ``event: end``."""
    from fastapi.concurrency import run_in_threadpool

    sentinel = object()
    while True:
        item = await run_in_threadpool(next, items, sentinel)
        if item is sentinel:
            break
        payload = item.model_dump(mode="json") if isinstance(item, BaseModel) else item
        yield f"data: {json.dumps(payload, default=str)}\n\n".encode()
    yield b"event: end\ndata: {}\n\n"


def load_service(target: str) -> Service:
    """``path/to/file.py:ClassName`` → an instance (not yet set up)."""
    file, sep, cls_name = target.rpartition(":")
    path = Path(file)
    if not sep or not path.suffix == ".py" or not path.is_file():
        raise ConfigError(f"{target!r} is not FILE.py:ClassName of an existing file.",
                          hint="Example: kaon serve services/echo.py:Echo")
    spec = importlib.util.spec_from_file_location(f"kaon_user_service_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"{path} has no kaon.Service subclass named {cls_name!r}.",
                          hint="Subclass kaon.Service and decorate methods with @kaon.handler.")
    return cls()
