"""Turn a Keras-style layer list into a ``torch.nn.Sequential``, inferring input sizes."""

from __future__ import annotations

import torch
from torch import nn

from kaon.errors import ConfigError
from kaon.nn import spec as s

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module | None:
    """The module for an activation name; None for ``none``. Softmax acts over classes."""
    if name == "none":
        return None
    if name == "softmax":
        return nn.Softmax(dim=1)
    return _ACTIVATIONS[name]()


def build_layers(layers: list[s.Layer], input_shape: tuple[int, ...]) -> nn.Sequential:
    """Build the layers in order. ``input_shape`` is (C, H, W) without the batch dimension.

    A softmax or sigmoid on the last layer is left out: the model returns logits and the loss
    applies the output activation (numerically safer, and what Keras does internally too).
    """
    modules: list[nn.Module] = []
    shape = tuple(input_shape)
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        where = f"model.layers.{index} ({layer.type})"
        if isinstance(layer, s.Flatten):
            modules.append(nn.Flatten())
            shape = (_numel(shape),)
        elif isinstance(layer, s.Dense):
            if len(shape) != 1:
                modules.append(nn.Flatten())
                shape = (_numel(shape),)
            modules.append(nn.Linear(shape[0], layer.units))
            shape = (layer.units,)
            _append_activation(modules, layer.activation, last)
        elif isinstance(layer, s.Conv2d):
            _need_image(shape, where)
            pad = layer.kernel_size // 2 if layer.padding == "same" else (
                0 if layer.padding == "valid" else layer.padding)
            conv = nn.Conv2d(shape[0], layer.filters, layer.kernel_size, layer.stride, pad,
                             bias=not layer.batchnorm)
            modules.append(conv)
            if layer.batchnorm:
                modules.append(nn.BatchNorm2d(layer.filters))
            shape = _probe(conv, shape, where)
            _append_activation(modules, layer.activation, last)
        elif isinstance(layer, s.MaxPool2d | s.AvgPool2d):
            _need_image(shape, where)
            cls = nn.MaxPool2d if isinstance(layer, s.MaxPool2d) else nn.AvgPool2d
            pool = cls(layer.pool)
            modules.append(pool)
            shape = _probe(pool, shape, where)
        elif isinstance(layer, s.GlobalAvgPool):
            _need_image(shape, where)
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            shape = (shape[0],)
        elif isinstance(layer, s.BatchNorm):
            modules.append(nn.BatchNorm2d(shape[0]) if len(shape) == 3 else
                           nn.BatchNorm1d(shape[0]))
        elif isinstance(layer, s.Dropout):
            modules.append(nn.Dropout(layer.rate))
        elif isinstance(layer, s.ActivationLayer):
            _append_activation(modules, layer.name, last)
        if any(d <= 0 for d in shape):
            raise ConfigError(f"{where} shrinks the input to {shape}.",
                              hint="Use fewer pooling/stride layers or 'same' padding.")
    if len(shape) != 1:
        modules.append(nn.Flatten())
    return nn.Sequential(*modules)


def _append_activation(modules: list[nn.Module], name: str, last: bool) -> None:
    if last and name in ("softmax", "sigmoid"):
        return
    act = activation(name)
    if act is not None:
        modules.append(act)


def _need_image(shape: tuple[int, ...], where: str) -> None:
    if len(shape) != 3:
        raise ConfigError(f"{where} needs an image input (C, H, W) but gets a vector {shape}.",
                          hint="Put convolution and pooling layers before 'flatten'/'dense'.")


def _probe(module: nn.Module, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The output shape of ``module`` for one input of ``shape`` (C, H, W)."""
    try:
        with torch.no_grad():
            return tuple(module(torch.zeros(1, *shape)).shape[1:])
    except RuntimeError:
        raise ConfigError(f"{where} shrinks its {shape[1]}x{shape[2]} input to nothing.",
                          hint="Use fewer pooling/stride layers or 'same' padding.") from None


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out
