"""A small Python client for a Kaon model server (``kaon serve``) or platform (``kaon up``).

    >>> from kaon import Client
    >>> client = Client("http://127.0.0.1:8000")
    >>> client.wait_ready()
    >>> client.predict("mnist-mlp", images)   # uint8 array (N, H, W) or (N, C, H, W)

The platform's methods (``me``, ``deploy``, ``infer``, ``usage``, …) are in
:mod:`kaon.client_platform`; they need ``api_key``.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from kaon.client_platform import PlatformMixin, segment
from kaon.errors import UnavailableError


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    probabilities: list[float]


class Client(PlatformMixin):
    """Talks to ``kaon serve`` (predict, model, wait_ready) and to ``kaon up`` (the platform
    methods of :class:`~kaon.client_platform.PlatformMixin`, with ``api_key``). Errors come
    back as the server's :class:`KaonError` subclass, with its hint."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ready(self) -> bool:
        """Whether a Kaon server answers /readyz with 200 (another server's 200 page is not
        ready: its body is not Kaon's)."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError:
            return False
        try:
            return response.status_code == 200 and isinstance(response.json(), dict)
        except ValueError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server has loaded its model (or raise UnavailableError after
        ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"Server {self._http.base_url} not ready after {timeout:.0f}s.",
                    hint="Check the server's log; is the model name right?")
            time.sleep(0.1)

    def model(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/models/{segment(name)}")  # type: ignore[no-any-return]

    def predict(self, name: str, images: Any) -> list[Prediction]:
        """``images``: a uint8 array (N, H, W)/(N, C, H, W), or a list of PNG/JPEG bytes/paths."""
        payload = {"inputs": _encode(images)}
        body = self._request("POST", f"/v1/models/{segment(name)}/predict", json=payload)
        return [Prediction(**p) for p in body["predictions"]]


def _encode(images: Any) -> list[Any]:
    if isinstance(images, np.ndarray) or hasattr(images, "numpy"):
        array = np.asarray(images)
        return [img.tolist() for img in array]
    out: list[Any] = []
    for item in images:
        if isinstance(item, str | Path):
            item = Path(item).read_bytes()
        if isinstance(item, bytes):
            out.append(base64.b64encode(item).decode("ascii"))
        else:
            out.append(np.asarray(item).tolist())
    return out
