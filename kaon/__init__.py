"""Kaon: an open, self-hostable AI platform — train, register and serve deep-learning models.

``kaon.Client`` talks to a server; ``kaon.Service``, ``kaon.handler`` and ``kaon.Batch`` write
one (loaded on first use, so ``import kaon`` stays light).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from kaon.client import Client, Prediction

__version__ = "0.1.0"
_LAZY = {"Service": "kaon.serve.service", "handler": "kaon.serve.service",
         "Batch": "kaon.serve.service"}
__all__ = ["Batch", "Client", "Prediction", "Service", "__version__", "handler"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kaon' has no attribute {name!r}")
