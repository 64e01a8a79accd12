"""The first-cut HTTP server: FastAPI over one :class:`Predictor`.

Routes: ``POST /v1/models/{name}/predict``, ``GET /v1/models/{name}``, ``/healthz``,
``/readyz`` (200 only once weights are loaded) and the OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from kaon.errors import KaonError, NotFoundError, UnavailableError
from kaon.serve.decode import decode_inputs
from kaon.serve.predictor import Predictor

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_BATCH = 1024


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[str | list[Any]] = Field(
        min_length=1, max_length=MAX_BATCH,
        description="Base64 PNG/JPEG strings, or nested pixel values shaped like the signature.",
    )


class Prediction(BaseModel):
    label: str
    index: int
    probabilities: list[float]


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]


class BodyLimit:
    """Answer 413 before reading a body larger than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        # Read the (bounded) body first, so a chunked upload past the limit is a clean 413.
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._reject(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(status_code=413, content={
            "error": "PayloadTooLarge",
            "message": f"Request body is over {self.limit} bytes.",
            "hint": "Send fewer images per request."})
        await response({"type": "http"}, _noop_receive, send)


def _replay(messages: list[dict[str, Any]], receive: Receive) -> Receive:
    """A receive() that hands out ``messages`` first, then defers to the real one."""
    pending = list(messages)

    async def replay() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _noop_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def create_app(load: Callable[[], Predictor], max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """Build the app; ``load`` runs once in the background and ``/readyz`` waits for it."""
    state: dict[str, Any] = {"predictor": None, "error": None}
    loaded = threading.Event()

    def _load() -> None:
        try:
            state["predictor"] = load()
        except Exception as exc:
            state["error"] = exc
        finally:
            loaded.set()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=_load, name="kaon-model-loader", daemon=True).start()
        yield

    app = FastAPI(title="Kaon model server", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=max_body)

    @app.exception_handler(KaonError)
    async def _kaon_error(_: Request, exc: KaonError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=exc.to_dict())

    def predictor_for(name: str) -> Predictor:
        predictor = state["predictor"]
        if state["error"] is not None:
            raise UnavailableError(f"The model failed to load: {state['error']}",
                                   hint="Check the server log; restart it once the cause is fixed.")
        if predictor is None:
            raise UnavailableError("The model is still loading.",
                                   hint="Poll /readyz until it answers 200.")
        if name != predictor.name:
            raise NotFoundError(f"This server has no model {name!r}. Served: "
                                f"{predictor.name!r}.", hint=f"POST /v1/models/"
                                f"{predictor.name}/predict")
        return predictor

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: weights are loaded",
             responses={503: {"description": "still loading, or loading failed"}})
    async def readyz() -> JSONResponse:
        if state["predictor"] is not None:
            p = state["predictor"]
            return JSONResponse({"status": "ready", "model": p.name, "version": p.version})
        detail = str(state["error"]) if state["error"] else "loading"
        return JSONResponse(status_code=503, content={"status": "not ready", "detail": detail})

    @app.get("/v1/models/{name}", summary="The model's version and input signature")
    async def model_info(name: str) -> dict[str, Any]:
        p = predictor_for(name)
        return {"name": p.name, "version": p.version,
                "signature": p.signature.model_dump(mode="json")}

    @app.post("/v1/models/{name}/predict", response_model=PredictResponse,
              summary="Classify a batch of images",
              responses={404: {"description": "unknown model"},
                         413: {"description": "body too large"},
                         422: {"description": "input does not match the signature"}})
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        p = predictor_for(name)
        images = decode_inputs(body.inputs, p.signature)
        predictions = await run_in_threadpool(p.predict, images)
        return {"model": p.name, "version": p.version, "predictions": predictions}

    app.state.loaded = loaded
    app.state.kaon = state
    return app


async def wait_loaded(app: FastAPI, timeout: float = 60.0) -> None:
    await asyncio.wait_for(asyncio.to_thread(app.state.loaded.wait), timeout)
