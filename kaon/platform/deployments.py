"""Deployment records: a registered model version served with N replicas.

Only database state lives here (created ``pending``); the runtime (elsewhere) starts,
scales and stops servers and moves ``state`` and ``port``.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kaon.db.models import Model, ModelVersion, new_id, utcnow
from kaon.errors import ConfigError, NotFoundError
from kaon.names import is_valid_name
from kaon.platform.common import check_name, lock_workspace
from kaon.platform.errors import ConflictError, PlanLimitError
from kaon.platform.models import Deployment
from kaon.platform.plans import Plan

MAX_BATCH_SIZE = 4096
MAX_WAIT_MS = 10_000.0
_LIST_THEM = "List them with `kaon deployments list` (GET /api/v1/deployments)."


def _check_batching(max_batch_size: int, max_wait_ms: float) -> None:
    if not 1 <= max_batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"max_batch_size must be between 1 and {MAX_BATCH_SIZE}.")
    if not 0 <= max_wait_ms <= MAX_WAIT_MS:
        raise ConfigError(f"max_wait_ms must be between 0 and {MAX_WAIT_MS:g}.")


def _check_replicas(replicas: int, plan: Plan) -> None:
    if replicas < 1:
        raise ConfigError("replicas must be at least 1.")
    if replicas > plan.max_replicas:
        raise PlanLimitError(f"The {plan.name} plan allows at most {plan.max_replicas} "
                             f"replica(s) per deployment, not {replicas}.",
                             hint="Upgrade the plan for more replicas.")


def resolve_version(session: Session, workspace_id: str, model: str,
                    version: int | None) -> int:
    """The registered version to serve (the latest when ``version`` is None), or 404."""
    query = (select(func.max(ModelVersion.version)) if version is None
             else select(ModelVersion.version).where(ModelVersion.version == version))
    found = session.scalar(query.join(Model, Model.id == ModelVersion.model_id)
                           .where(Model.workspace_id == workspace_id, Model.name == model))
    if found is None:
        what = f"{model}:{version}" if version is not None else model
        raise NotFoundError(f"No registered model {what!r} in this workspace.",
                            hint="Register it first (kaon train registers by default).")
    return int(found)


def create_deployment(session: Session, workspace_id: str, name: str, model: str, *,
                      plan: Plan, version: int | None = None, replicas: int = 1,
                      max_batch_size: int = 32, max_wait_ms: float = 5.0) -> Deployment:
    """Record a deployment of ``model`` (the latest version unless given), within the plan.

    The workspace is locked for the rest of the transaction (:func:`lock_workspace`), so
    creations at the same instant are counted one after another and never pass the plan's
    ``max_deployments``.
    """
    check_name(name, "deployment name")
    check_name(model, "model name")
    _check_replicas(replicas, plan)
    _check_batching(max_batch_size, max_wait_ms)
    lock_workspace(session, workspace_id)
    resolved = resolve_version(session, workspace_id, model, version)
    if session.scalar(select(Deployment.id).where(Deployment.workspace_id == workspace_id,
                                                  Deployment.name == name)):
        raise ConflictError(f"A deployment named {name!r} exists.",
                            hint="Choose another name, or PATCH the existing one.")
    count = session.scalar(select(func.count()).select_from(Deployment)
                           .where(Deployment.workspace_id == workspace_id)) or 0
    if count >= plan.max_deployments:
        raise PlanLimitError(f"The {plan.name} plan allows {plan.max_deployments} "
                             f"deployment(s); this workspace has {count}.",
                             hint="Delete a deployment or upgrade the plan.")
    now = utcnow()
    row = Deployment(id=new_id("dep"), workspace_id=workspace_id, name=name, model=model,
                     version=resolved, replicas=replicas, max_batch_size=max_batch_size,
                     max_wait_ms=float(max_wait_ms), state="pending", created_at=now,
                     updated_at=now)
    session.add(row)
    session.flush()
    return row


def list_deployments(session: Session, workspace_id: str) -> list[Deployment]:
    return list(session.scalars(select(Deployment).where(Deployment.workspace_id == workspace_id)
                                .order_by(Deployment.name)))


def get_deployment(session: Session, workspace_id: str, name: str) -> Deployment:
    if not is_valid_name(name):
        raise NotFoundError(f"No deployment {str(name)[:80]!r}.", hint=_LIST_THEM)
    row = session.scalar(select(Deployment).where(Deployment.workspace_id == workspace_id,
                                                  Deployment.name == name))
    if row is None:
        raise NotFoundError(f"No deployment {name!r}.", hint=_LIST_THEM)
    return row


def scale_deployment(session: Session, workspace_id: str, name: str, *, plan: Plan,
                     replicas: int | None = None, max_batch_size: int | None = None,
                     max_wait_ms: float | None = None) -> Deployment:
    """Change replicas and/or batching; the runtime picks the change up (under the
    workspace's lock, like a plan change that checks the replicas)."""
    lock_workspace(session, workspace_id)
    row = get_deployment(session, workspace_id, name)
    if replicas is not None:
        _check_replicas(replicas, plan)
    _check_batching(row.max_batch_size if max_batch_size is None else max_batch_size,
                    row.max_wait_ms if max_wait_ms is None else max_wait_ms)
    if replicas is not None:
        row.replicas = replicas
    if max_batch_size is not None:
        row.max_batch_size = max_batch_size
    if max_wait_ms is not None:
        row.max_wait_ms = float(max_wait_ms)
    row.updated_at = utcnow()
    session.flush()
    return row


def delete_deployment(session: Session, workspace_id: str, name: str) -> Deployment:
    """Delete the record (returned, detached); the runtime stops its servers."""
    row = get_deployment(session, workspace_id, name)
    session.delete(row)
    session.flush()
    return row
