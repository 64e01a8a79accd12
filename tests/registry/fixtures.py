"""Tiny untrained models registered into the per-test KAON_HOME (shared by registry, serve, CLI)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kaon.nn import build_model, parse_spec
from kaon.nn.spec import TrainSpec
from kaon.registry import ModelInfo, Signature, register

DIGITS = [str(i) for i in range(10)]
MNIST_SIGNATURE = Signature(shape=(1, 28, 28), mean=[0.1307], std=[0.3081], class_names=DIGITS)
DATASET_HASH = "0" * 64


def tiny_spec(name: str = "tiny", **extra: Any) -> TrainSpec:
    """A small MLP spec for 1x28x28 inputs (8 hidden units)."""
    return parse_spec({"name": name, "data": {"dataset": "mnist"},
                       "model": {"family": "mlp", "hidden": [8]}, **extra})


def tiny_model(spec: TrainSpec, signature: Signature = MNIST_SIGNATURE,
               seed: int = 0) -> nn.Module:
    """The spec's network with seeded random weights (no training: zero steps)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(spec, signature.shape, len(signature.class_names))


def register_tiny(name: str = "tiny", *, seed: int = 0, signature: Signature = MNIST_SIGNATURE,
                  spec: TrainSpec | None = None, **kwargs: Any) -> ModelInfo:
    """Register a freshly built tiny model as the next version of ``name``."""
    spec = spec or tiny_spec()
    model = tiny_model(spec, signature, seed)
    return register(name, model.state_dict(), spec=spec.model_dump(mode="json"),
                    signature=signature, dataset="mnist", dataset_hash=DATASET_HASH, **kwargs)
