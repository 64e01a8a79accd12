"""The same registered model behind LitServe, for bench/serve_compare.py.

    python bench/servers/litserve_app.py MODEL_REF PORT MAX_BATCH_SIZE MAX_WAIT_MS [DEVICE]

Request and response bodies match Kaon's predict route: ``{"inputs": [image]}`` in,
``{"predictions": [...]}`` out; the model call is Kaon's own ``RegistryPredictor`` so both
servers run identical model code and differ only in the serving stack.
"""

from __future__ import annotations

import sys

import litserve as ls
import numpy as np
import torch

from kaon.nn.devices import resolve_device
from kaon.serve import RegistryPredictor


class KaonModelAPI(ls.LitAPI):
    def __init__(self, ref: str, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.ref = ref

    def setup(self, device: str) -> None:
        self.predictor = RegistryPredictor.from_ref(self.ref, device=device)
        self.shape = tuple(self.predictor.signature.shape)

    def decode_request(self, request: dict) -> torch.Tensor:  # type: ignore[override]
        return torch.from_numpy(np.asarray(request["inputs"][0], dtype=np.uint8)
                                .reshape(self.shape))

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> list[dict]:  # type: ignore[override]
        return self.predictor.predict(x if x.dim() == 4 else x[None])

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict | list[dict]) -> dict:  # type: ignore[override]
        return {"predictions": output if isinstance(output, list) else [output]}


if __name__ == "__main__":
    ref, port, batch, wait_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        float(sys.argv[4])
    device = resolve_device(sys.argv[5] if len(sys.argv) > 5 else "cpu")
    api = KaonModelAPI(ref, batch, wait_ms / 1000)
    # LitServe hands setup() its own device string ("cpu", "cuda:0"), one worker per device.
    server = ls.LitServer(api, accelerator="cuda" if device.type == "cuda" else "cpu",
                          devices=1, workers_per_device=1, timeout=30)
    server.run(host="127.0.0.1", port=port, num_api_servers=1, log_level="warning",
               generate_client_file=False)
