"""The model registry: named models, integer versions, movable aliases, lineage.

Metadata lives in SQL; weights live as safetensors under ``KAON_HOME/models``.
References look like ``name`` (latest version), ``name:3`` or ``name@production``.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from kaon.config import get_settings
from kaon.db import session_scope
from kaon.db.models import DEFAULT_WORKSPACE, Model, ModelAlias, ModelVersion, new_id
from kaon.errors import ConfigError, NotFoundError
from kaon.names import is_valid_name
from kaon.registry.signature import Signature

if TYPE_CHECKING:  # torch is loaded to write weights, not to list or look up models
    import torch

_REF = re.compile(r"^(?P<name>[^@:]+)(?::(?P<version>\d+)|@(?P<alias>[^@:]+))?$")


@dataclass(frozen=True)
class ModelInfo:
    """One registered model version, detached from the database session."""

    id: str
    name: str
    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    spec: dict[str, Any]
    dataset: str
    dataset_hash: str
    metrics: dict[str, Any]
    signature: Signature
    parent: str | None
    lineage: dict[str, Any]
    artifact: Path
    sha256: str
    size_bytes: int
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "version": self.version,
            "aliases": list(self.aliases), "run_id": self.run_id, "dataset": self.dataset,
            "dataset_hash": self.dataset_hash, "metrics": self.metrics,
            "signature": self.signature.model_dump(mode="json"), "parent": self.parent,
            "lineage": self.lineage,
            "artifact": str(self.artifact), "sha256": self.sha256,
            "size_bytes": self.size_bytes, "created_at": self.created_at.isoformat(),
            "spec": self.spec,
        }


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """``name``, ``name:3`` or ``name@alias`` → (name, version, alias)."""
    match = _REF.fullmatch(ref.strip())
    if not match or not is_valid_name(match["name"]):
        raise ConfigError(f"{ref!r} is not a model reference.",
                          hint="Use NAME, NAME:VERSION or NAME@ALIAS, e.g. mnist-mlp@production.")
    version = int(match["version"]) if match["version"] else None
    return match["name"], version, match["alias"]


def check_name(name: str, what: str = "model name") -> str:
    if not is_valid_name(name):
        raise ConfigError(f"{what} {name!r} is not allowed.",
                          hint="Use lower-case letters, digits, '.', '_' and '-' (max 64), "
                               "starting with a letter or digit.")
    return name


def register(
    name: str,
    state: dict[str, torch.Tensor],
    *,
    spec: dict[str, Any],
    signature: Signature,
    dataset: str,
    dataset_hash: str,
    metrics: dict[str, Any] | None = None,
    run_id: str | None = None,
    parent: str | None = None,
    alias: str | None = None,
    lineage: dict[str, Any] | None = None,
    workspace: str = DEFAULT_WORKSPACE,
) -> ModelInfo:
    """Store weights and metadata as the next version of ``name``; optionally move an alias.

    ``parent`` names the registered model this one was derived from; ``lineage`` records any
    other origin (e.g. ``{"study": "tune-…", "trial": 12}`` for a model found by ``kaon tune``).
    """
    check_name(name)
    if alias is not None:
        check_name(alias, "alias")
    fields = {"spec": spec, "signature": signature.model_dump(mode="json"), "dataset": dataset,
              "dataset_hash": dataset_hash, "metrics": metrics or {}, "run_id": run_id,
              "lineage": lineage or {}}
    for attempt in range(5):
        try:
            return _register_once(name, state, fields, parent, alias, workspace)
        except (IntegrityError, OperationalError):
            # another process registered the same name at the same moment: take the next number
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def version_dir(workspace: str, name: str, version: int) -> Path:
    """Where one version's files live: ``KAON_HOME/models/WORKSPACE/NAME/vN``."""
    return get_settings().models_dir / workspace / name / f"v{version}"


def _register_once(name: str, state: dict[str, torch.Tensor], fields: dict[str, Any],
                   parent: str | None, alias: str | None, workspace: str) -> ModelInfo:
    with session_scope() as db:
        parent_row = _resolve(db, parent, workspace) if parent else None
        model = db.scalar(select(Model).where(Model.workspace_id == workspace,
                                              Model.name == name))
        if model is None:
            model = Model(id=new_id("mdl"), workspace_id=workspace, name=name)
            db.add(model)
            db.flush()
        latest = db.scalar(select(func.max(ModelVersion.version))
                           .where(ModelVersion.model_id == model.id)) or 0
        version = max(latest, model.last_version or 0) + 1
        model.last_version = version
        path = version_dir(workspace, name, version) / "model.safetensors"
        row = ModelVersion(id=new_id("mv"), model_id=model.id, version=version,
                           parent_id=parent_row.id if parent_row else None,
                           artifact=str(path), sha256="", size_bytes=0, **fields)
        db.add(row)
        db.flush()  # the version number is ours (unique per model) before any file is written
        from kaon.registry.artifacts import save_weights

        row.sha256, row.size_bytes = save_weights(state, path,
                                                  metadata={"kaon.model": f"{name}:{version}"})
        try:
            _meter_storage(db, workspace, row, f"{name}:{version}")
        except BaseException:  # refused (a full storage quota): the file is not kept
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        if alias:
            _set_alias(db, model, alias, row)
        db.flush()
        db.refresh(model)
        return _info(db, row)


def _meter_storage(db: Session, workspace: str, row: ModelVersion, ref: str,
                   freed: bool = False) -> None:
    """On the platform, a stored version's bytes are usage: one event, in this transaction;
    deleting the version (``freed``) gives them back. A hard-capped plan refuses a version
    that would pass its storage (:class:`~kaon.platform.errors.QuotaExceeded`), as it
    refuses a dataset upload.

    Plain local use has no workspace record (``kaon up`` creates them): nothing to meter.
    """
    from kaon.platform import billing, metering, quota
    from kaon.platform.errors import QuotaExceeded
    from kaon.platform.models import Workspace

    if db.get(Workspace, workspace) is None:
        return
    if freed:
        metering.record(db, workspace, "storage_bytes", -row.size_bytes,
                        f"model-freed:{row.id}", {"model": ref})
        return
    plan = billing.current_plan(db, workspace)
    try:
        quota.check_and_consume(db, workspace, "storage_bytes", row.size_bytes, plan,
                                event_key=f"model:{row.id}", source={"model": ref})
    except QuotaExceeded as exc:  # the job's error line is the message: say what to do in it
        exc.message = (f"Model {ref} ({row.size_bytes:,} bytes) was not registered: it would "
                       f"take this workspace's storage past the {plan.name} plan's "
                       f"{exc.limit:,} bytes ({exc.used:,} held). Delete model versions or "
                       "datasets it no longer needs, or change to a plan with more storage.")
        exc.args = (exc.message,)
        raise


def get(ref: str, workspace: str = DEFAULT_WORKSPACE) -> ModelInfo:
    with session_scope() as db:
        return _info(db, _resolve(db, ref, workspace))


def list_models(workspace: str = DEFAULT_WORKSPACE) -> list[ModelInfo]:
    """Every version of every model, by name then version."""
    with session_scope() as db:
        rows = db.scalars(select(ModelVersion).join(Model)
                          .where(Model.workspace_id == workspace)
                          .order_by(Model.name, ModelVersion.version)).all()
        return [_info(db, r) for r in rows]


def set_alias(ref: str, alias: str, workspace: str = DEFAULT_WORKSPACE) -> ModelInfo:
    """Point ``alias`` at the version ``ref`` names (moving it if it pointed elsewhere)."""
    check_name(alias, "alias")
    with session_scope() as db:
        row = _resolve(db, ref, workspace)
        _set_alias(db, row.model, alias, row)
        db.flush()
        return _info(db, row)


def remove_alias(name: str, alias: str, workspace: str = DEFAULT_WORKSPACE) -> None:
    with session_scope() as db:
        row = _resolve(db, f"{name}@{alias}", workspace)
        for a in list(row.model.aliases):
            if a.alias == alias:
                db.delete(a)


def update_metrics(ref: str, metrics: dict[str, Any],
                   workspace: str = DEFAULT_WORKSPACE) -> ModelInfo:
    with session_scope() as db:
        row = _resolve(db, ref, workspace)
        row.metrics = {**row.metrics, **metrics}
        db.flush()
        return _info(db, row)


def update_lineage(ref: str, lineage: dict[str, Any],
                   workspace: str = DEFAULT_WORKSPACE) -> ModelInfo:
    with session_scope() as db:
        row = _resolve(db, ref, workspace)
        row.lineage = {**(row.lineage or {}), **lineage}
        db.flush()
        return _info(db, row)


def delete(ref: str, workspace: str = DEFAULT_WORKSPACE) -> list[str]:
    """Delete one version (``name:3``/``name@alias``) or, for a bare name, the whole model."""
    name, version, alias = parse_ref(ref)
    with session_scope() as db:
        if version is None and alias is None:
            model = _model(db, name, workspace)
            refs = [f"{name}:{v.version}" for v in model.versions]
            folder = version_dir(workspace, name, 1).parent
            for row in model.versions:
                _meter_storage(db, workspace, row, f"{name}:{row.version}", freed=True)
            db.delete(model)
        else:
            row = _resolve(db, ref, workspace)
            refs = [f"{name}:{row.version}"]
            folder = Path(row.artifact).parent
            model = row.model
            _meter_storage(db, workspace, row, refs[0], freed=True)
            db.delete(row)
            db.flush()
            db.refresh(model)
            if not model.versions:  # the last version: the model goes too
                db.delete(model)
    shutil.rmtree(folder, ignore_errors=True)
    return refs


# ---- internals ---------------------------------------------------------------------------------
def _model(db: Session, name: str, workspace: str) -> Model:
    model = db.scalar(select(Model).where(Model.workspace_id == workspace, Model.name == name))
    if model is None:
        known = db.scalars(select(Model.name).where(Model.workspace_id == workspace)
                           .order_by(Model.name)).all()
        raise NotFoundError(
            f"No model named {name!r}. Known models: {', '.join(known) or '(none)'}.",
            hint="List them with `kaon models list`; register one with `kaon train SPEC`.")
    return model


def _resolve(db: Session, ref: str, workspace: str) -> ModelVersion:
    name, version, alias = parse_ref(ref)
    model = _model(db, name, workspace)
    if alias is not None:
        for a in model.aliases:
            if a.alias == alias:
                return a.version
        known = sorted(a.alias for a in model.aliases)
        raise NotFoundError(f"Model {name!r} has no alias {alias!r}. "
                            f"Known aliases: {', '.join(known) or '(none)'}.",
                            hint=f"Set one with `kaon models alias {name}:VERSION {alias}`.")
    if not model.versions:
        raise NotFoundError(f"Model {name!r} has no versions.")
    if version is None:
        return model.versions[-1]
    for v in model.versions:
        if v.version == version:
            return v
    known_versions = ", ".join(str(v.version) for v in model.versions)
    raise NotFoundError(f"Model {name!r} has no version {version}. Known versions: "
                        f"{known_versions}.", hint=f"See `kaon models show {name}`.")


def _set_alias(db: Session, model: Model, alias: str, row: ModelVersion) -> None:
    for a in model.aliases:
        if a.alias == alias:
            a.version_id = row.id
            return
    db.add(ModelAlias(model_id=model.id, alias=alias, version_id=row.id))


def _info(db: Session, row: ModelVersion) -> ModelInfo:
    aliases = db.scalars(select(ModelAlias.alias).where(ModelAlias.version_id == row.id)
                         .order_by(ModelAlias.alias)).all()
    parent = None
    if row.parent_id:
        p = db.get(ModelVersion, row.parent_id)
        parent = f"{p.model.name}:{p.version}" if p else None
    return ModelInfo(
        id=row.id, name=row.model.name, version=row.version, aliases=tuple(aliases),
        run_id=row.run_id, spec=row.spec, dataset=row.dataset, dataset_hash=row.dataset_hash,
        metrics=dict(row.metrics or {}), signature=Signature.model_validate(row.signature),
        parent=parent, lineage=dict(row.lineage or {}), artifact=Path(row.artifact),
        sha256=row.sha256,
        size_bytes=row.size_bytes, created_at=row.created_at,
    )
