"""Test data shared by the control-plane tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from kaon.db.models import Model, ModelVersion, new_id

TRAIN_SPEC: dict[str, Any] = {
    "name": "mnist-mlp",
    "data": {"dataset": "mnist"},
    "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
    "epochs": 1,
}


def register_model(session: Session, workspace_id: str, name: str = "mnist-mlp",
                   versions: int = 2) -> None:
    """Registry rows only (no weights): what deployments check a model against."""
    model = Model(id=new_id("mdl"), workspace_id=workspace_id, name=name,
                  last_version=versions)
    session.add(model)
    session.flush()
    for v in range(1, versions + 1):
        session.add(ModelVersion(id=new_id("mv"), model_id=model.id, version=v, spec={},
                                 dataset="mnist", dataset_hash="0" * 64, metrics={},
                                 signature={}, lineage={}, artifact="/nowhere",
                                 sha256="0" * 64, size_bytes=0))
    session.flush()
