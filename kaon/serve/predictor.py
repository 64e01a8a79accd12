"""The one interface every serving runtime calls: ``Predictor.predict(images)``."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from kaon.db.models import DEFAULT_WORKSPACE
from kaon.registry import LoadedModel, load_model
from kaon.registry.signature import Signature


class Predictor(Protocol):
    name: str
    version: int
    signature: Signature

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        """uint8 (N, C, H, W) → one ``{label, index, probabilities}`` per image."""
        ...


class RegistryPredictor:
    """Serves a registered model version."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.name = loaded.info.name
        self.version = loaded.info.version
        self.signature = loaded.info.signature

    @classmethod
    def from_ref(cls, ref: str, workspace: str = DEFAULT_WORKSPACE,
                 device: torch.device | str = "cpu") -> RegistryPredictor:
        return cls(load_model(ref, workspace, device))

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        proba = self.loaded.predict_proba(images)
        names = self.signature.class_names
        top = proba.argmax(1).tolist()
        return [{"label": names[i], "index": i, "probabilities": [round(p, 6) for p in row]}
                for i, row in zip(top, proba.tolist(), strict=True)]
