"""Kaon's JSON predict: ``POST /v1/models/{name}/predict`` and ``GET /v1/models/{name}``."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

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
