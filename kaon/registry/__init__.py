"""Model registry: versions, aliases, lineage; safetensors artifacts."""

from kaon.registry.loader import LoadedModel, load_model
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
