"""Model registry: versions, aliases, lineage; safetensors artifacts.

``load_model`` and ``LoadedModel`` (which need torch) are loaded on first use, so listing and
looking up models stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from kaon.registry.signature import Signature
from kaon.registry.store import (
    ModelInfo,
    delete,
    get,
    list_models,
    parse_ref,
    register,
    remove_alias,
    set_alias,
    update_lineage,
    update_metrics,
)

__all__ = ["LoadedModel", "ModelInfo", "Signature", "delete", "get", "list_models",
           "load_model", "parse_ref", "register", "remove_alias", "set_alias", "update_lineage",
           "update_metrics"]

if TYPE_CHECKING:
    from kaon.registry.loader import LoadedModel, load_model


def __getattr__(name: str) -> Any:
    if name in ("LoadedModel", "load_model"):
        return getattr(import_module("kaon.registry.loader"), name)
    raise AttributeError(f"module 'kaon.registry' has no attribute {name!r}")
