"""Spec → ``torch.nn.Module``."""

from __future__ import annotations

import torch
from torch import nn

from kaon.errors import ConfigError
from kaon.nn.families import FAMILIES
from kaon.nn.layers import build_layers
from kaon.nn.spec import FamilyModel, LayersModel, TrainSpec


def output_units(spec: TrainSpec, num_classes: int) -> int:
    """Binary cross-entropy on two classes uses one logit; everything else one per class."""
    return 1 if spec.loss == "binary_cross_entropy" and num_classes == 2 else num_classes


MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights, before gradients and optimizer state


def build_model(spec: TrainSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build the network the spec describes and check that its output fits the task."""
    _check_size(spec, input_shape, num_classes)
    return _build(spec, input_shape, num_classes)


def _check_size(spec: TrainSpec, input_shape: tuple[int, int, int], num_classes: int) -> None:
    """Count the parameters on the meta device (no memory) before building for real: a layer
    of 10**9 units would otherwise take the machine's memory before failing."""
    with torch.device("meta"):
        count = sum(p.numel() for p in _build(spec, input_shape, num_classes).parameters())
    if count > MAX_PARAMETERS:
        raise ConfigError(f"The model has {count:,} parameters, over Kaon's {MAX_PARAMETERS:,}.",
                          hint="Use fewer units, filters or channels.")


def _build(spec: TrainSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    out = output_units(spec, num_classes)
    model_cfg = spec.model
    if isinstance(model_cfg, FamilyModel):
        if model_cfg.family == "cnn" and min(input_shape[1:]) >> len(model_cfg.channels) == 0:
            raise ConfigError(
                f"A cnn with {len(model_cfg.channels)} stages halves a {input_shape[1]}x"
                f"{input_shape[2]} image to nothing.",
                hint="Use fewer entries in model.channels.")
        model = FAMILIES[model_cfg.family](model_cfg, input_shape, out)
    else:
        assert isinstance(model_cfg, LayersModel)
        model = build_layers(list(model_cfg.layers), input_shape)
        with torch.no_grad():
            got = model.eval()(torch.zeros(2, *input_shape)).shape[1:]
        if tuple(got) != (out,):
            raise ConfigError(
                f"The last layer gives {tuple(got)} outputs but the task needs {out} "
                f"({num_classes} classes, loss {spec.loss}).",
                hint=f"Make the last layer 'dense' with units: {out}.",
            )
        model.train()
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
