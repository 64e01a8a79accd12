"""The same registered model behind a plain FastAPI + uvicorn app: no batching.

    python bench/servers/plain_fastapi.py MODEL_REF PORT [DEVICE]

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

from kaon.nn.devices import resolve_device
from kaon.serve import RegistryPredictor


def create(ref: str, device: str = "cpu") -> FastAPI:
    predictor = RegistryPredictor.from_ref(ref, device=resolve_device(device))
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
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    uvicorn.run(create(sys.argv[1], device), host="127.0.0.1", port=int(sys.argv[2]),
                log_level="warning", access_log=False)
