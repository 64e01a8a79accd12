"""The torch device a model runs on: ``auto`` (the GPU when there is one), ``cpu``, ``cuda[:N]``."""

from __future__ import annotations

import re

import torch

from kaon.errors import ConfigError

_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when PyTorch sees a GPU, else ``cpu``; anything else is checked."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(name)
    if match is None:
        raise ConfigError(f"Unknown device {name!r}.",
                          hint="Use auto, cpu, cuda or cuda:N.")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1) or 0)
    if index >= count:
        seen = f"{count} GPU(s)" if count else "no GPU"
        raise ConfigError(f"Device {name!r} asked for, but PyTorch sees {seen}.",
                          hint="Use --device cpu (or auto), or check the CUDA driver and "
                               "CUDA_VISIBLE_DEVICES.")
    return torch.device("cuda", index)
