"""The same registered model behind a plain FastAPI + uvicorn app: no batching.

    python bench/servers/plain_fastapi.py MODEL_REF PORT

What most tutorials write: one ``def`` endpoint (FastAPI runs it in its thread pool) that
calls the model once per request. Same request/response bodies and model code as Kaon.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI

from kaon.serve import RegistryPredictor


def create(ref: str) -> FastAPI:
    predictor = RegistryPredictor.from_ref(ref)
    shape = tuple(predictor.signature.shape)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        images = np.asarray(body["inputs"], dtype=np.uint8).reshape((-1, *shape))
        return {"predictions": predictor.predict(torch.from_numpy(images))}

    return app


if __name__ == "__main__":
    uvicorn.run(create(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]),
                log_level="warning", access_log=False)
