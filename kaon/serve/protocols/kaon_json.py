"""Kaon's JSON predict: ``POST /v1/models/{name}/predict`` and ``GET /v1/models/{name}``."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaon.errors import KaonError
from kaon.serve.asgi import replay
from kaon.serve.decode import decode_inputs
from kaon.serve.runtime import Runtime

MAX_BATCH = 1024
INLINE_DECODE = 4


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


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter(tags=["kaon"])

    @api.get("/v1/models/{name}", summary="The model's version and input signature")
    async def model_info(name: str) -> dict[str, Any]:
        p = runtime.predictor(name)
        return {"name": p.name, "version": p.version,
                "signature": p.signature.model_dump(mode="json")}

    @api.post("/v1/models/{name}/predict", response_model=PredictResponse,
              summary="Classify a batch of images",
              responses={404: {"description": "unknown model"},
                         413: {"description": "body too large"},
                         422: {"description": "input does not match the signature"},
                         503: {"description": "loading, or the queue is full"},
                         504: {"description": "no result in time"}})
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        p = runtime.predictor(name)
        if len(body.inputs) <= INLINE_DECODE:  # a few images decode faster than a thread hop
            images = decode_inputs(body.inputs, p.signature)
        else:  # decoding up to MAX_BATCH images is CPU work: keep it off the event loop
            images = await run_in_threadpool(decode_inputs, body.inputs, p.signature)
        predictions = await runtime.predict(np.ascontiguousarray(images.numpy()))
        return {"model": p.name, "version": p.version, "predictions": predictions}

    return api


def _json_or_none(scope: Scope) -> bool:
    """A JSON content type, or none (FastAPI parses both as JSON; anything else is a 422)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media.startswith(b"application/") and (
                media == b"application/json" or media.endswith(b"+json"))
    return True


class FastPredict:
    """The common case of ``POST /v1/models/{name}/predict`` as plain ASGI: a well-formed
    body of up to ``INLINE_DECODE`` images for the served model. FastAPI's routing, body model
    and response model cost more than a small model's inference (decision 0016). Anything
    else (malformed JSON, an unknown model, an input that does not match the signature, more
    images) goes on to the FastAPI route, which answers with its usual errors; the answer to
    a request taken here is the same JSON the route would send.
    """

    ROUTE = SimpleNamespace(path="/v1/models/{name}/predict")  # the metrics' route label

    def __init__(self, app: ASGIApp, runtime: Runtime,
                 errors: Callable[[KaonError], JSONResponse]) -> None:
        self.app, self.runtime, self.errors = app, runtime, errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"] if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or not path.startswith("/v1/models/") \
                or not path.endswith("/predict"):
            await self.app(scope, receive, send)
            return
        message = await receive()  # the body limit has read the whole body already
        parsed = self._parse(path[len("/v1/models/"):-len("/predict")], message) \
            if _json_or_none(scope) else None
        if parsed is None:
            await self.app(scope, replay([message], receive), send)
            return
        p, images = parsed
        scope["route"] = self.ROUTE
        try:
            predictions = await self.runtime.predict(images)
            response = JSONResponse({"model": p.name, "version": p.version,
                                     "predictions": predictions})
        except KaonError as exc:
            response = self.errors(exc)
        await response(scope, receive, send)

    def _parse(self, name: str, message: Message) -> tuple[Any, np.ndarray] | None:
        if message["type"] != "http.request" or message.get("more_body") or "/" in name:
            return None
        try:
            body = json.loads(message.get("body", b""))
            inputs = body.get("inputs") if type(body) is dict and len(body) == 1 else None
            if type(inputs) is not list or not 1 <= len(inputs) <= INLINE_DECODE:
                return None
            p = self.runtime.predictor(name)
            images = decode_inputs(inputs, p.signature)
        except Exception:  # the route says what was wrong, in its own words
            return None
        return p, np.ascontiguousarray(images.numpy())
