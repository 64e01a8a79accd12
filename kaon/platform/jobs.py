"""Job records: submit, list, get, request cancellation. Workers (elsewhere) run them.

States: queued → running → succeeded | failed | cancelled. A queued job is cancelled at
once; a running one gets ``cancel_requested`` and its worker stops it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kaon.db.models import new_id, utcnow
from kaon.errors import ConfigError, NotFoundError
from kaon.platform import quota
from kaon.platform.common import check_id, lock_workspace
from kaon.platform.errors import ConflictError, PlanLimitError
from kaon.platform.models import JOB_KINDS, JOB_STATES, Job
from kaon.platform.plans import Plan
from kaon.tune.space import SearchSpace, check_cv_folds

FEATURE_FOR_KIND = {"tune": "automl"}  # kinds a plan must list as a feature
MAX_QUEUED = 50  # jobs of one workspace waiting for a worker: the queue is bounded


class TuneSpec(BaseModel):
    """A tuning job's spec, whichever route it comes by: what `kaon tune` takes, bounded
    (docs/tune.md)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    time_seconds: float = Field(gt=0, le=7 * 24 * 3600)
    objective: Literal["accuracy", "auc"] = "accuracy"
    multi_objective: Literal["latency", "params"] | None = None
    trial_seconds: float | None = Field(default=None, gt=0, le=24 * 3600)
    model_name: str | None = Field(default=None, max_length=58,
                                   pattern=r"^[a-z0-9][a-z0-9._-]*$")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    warm_start: bool = True
    sampler: Literal["tpe", "random"] = "tpe"
    pruning: bool = True
    cv_folds: int | None = Field(default=None, ge=0, le=10, description=(
        "K-fold cross-validation of every trial: 0 off, 2-10 folds (default: 3 folds when "
        "the validation split is under 1,000 images)"))
    robust: bool | None = Field(default=None, description=(
        "score trials on perturbed validation images (default: when cross-validated)"))
    space: SearchSpace | None = Field(default=None, description=(
        "what the search may choose; keys left out keep their defaults (docs/tune.md)"))

    _folds = field_validator("cv_folds")(check_cv_folds)


def validate_spec(kind: str, spec: Any) -> dict[str, Any]:
    """A train spec must be a valid training spec; a tune spec a mapping (the runner checks)."""
    if kind not in JOB_KINDS:
        raise ConfigError(f"kind {str(kind)[:20]!r} is not a job kind.",
                          hint=f"Kinds: {', '.join(JOB_KINDS)}.")
    if not isinstance(spec, dict):
        raise ConfigError("spec must be a mapping.")
    try:  # what the database and every client can store and read back
        json.dumps(spec, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        raise ConfigError("spec must be plain JSON: no NaN or Infinity, no unpaired "
                          "surrogates in strings.") from None
    if kind == "train":
        from kaon.nn.spec import parse_spec  # imports torch: only when a train job comes in

        parse_spec(spec, source="(job spec)")
    else:
        if "workspace" in spec:
            raise ConfigError("A tuning request cannot name a workspace; it runs in the "
                              "key's own.")
        from kaon.tune.study import TuneConfig

        try:  # the bounds of POST /tune, then what the runner itself will ask of it
            TuneSpec.model_validate(spec)
            TuneConfig.model_validate({**spec, "workspace": "default"})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors()[:5])
            raise ConfigError(f"Invalid tuning request: {problems}.",
                              hint=f"Fields: {', '.join(TuneSpec.model_fields)}.") from None
    return spec


def submit_job(session: Session, workspace_id: str, kind: str, spec: dict[str, Any], *,
               plan: Plan | None = None, max_attempts: int = 3) -> Job:
    """Queue a job after checking its spec, the plan's features and training quota."""
    validate_spec(kind, spec)
    if not 1 <= max_attempts <= 10:
        raise ConfigError("max_attempts must be between 1 and 10.")
    from kaon.data import describe_dataset

    # the workspace's own dataset or the catalog's, never another workspace's (404 now,
    # rather than a job that fails later)
    describe_dataset(spec["dataset"] if kind == "tune" else spec["data"]["dataset"],
                     workspace_id)
    if plan is not None:
        feature = FEATURE_FOR_KIND.get(kind)
        if feature and not plan.has(feature):
            raise PlanLimitError(f"The {plan.name} plan does not include {feature!r} "
                                 f"({kind} jobs).", hint="Upgrade the plan.")
        quota.check(session, workspace_id, "training_seconds", plan)
    lock_workspace(session, workspace_id)  # the queue's bound holds under racing submissions
    waiting = session.scalar(select(func.count()).select_from(Job).where(
        Job.workspace_id == workspace_id, Job.state == "queued")) or 0
    if waiting >= MAX_QUEUED:
        raise ConflictError(f"This workspace has {waiting} jobs waiting; at most {MAX_QUEUED} "
                            "may wait at once.",
                            hint="Submit again once some have started, or cancel some.")
    job = Job(id=new_id("job"), workspace_id=workspace_id, kind=kind, spec=spec, state="queued",
              attempts=0, max_attempts=max_attempts, cancel_requested=False,
              compute_seconds=0.0, created_at=utcnow())
    session.add(job)
    session.flush()
    return job


def list_jobs(session: Session, workspace_id: str, state: str | None = None,
              limit: int = 100) -> list[Job]:
    """Newest first."""
    query = select(Job).where(Job.workspace_id == workspace_id)
    if state is not None:
        if state not in JOB_STATES:
            raise ConfigError(f"state {str(state)[:20]!r} is not a job state.",
                              hint=f"States: {', '.join(JOB_STATES)}.")
        query = query.where(Job.state == state)
    return list(session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit)))


def get_job(session: Session, workspace_id: str, job_id: str) -> Job:
    check_id(job_id, "job")
    job = session.scalar(select(Job).where(Job.workspace_id == workspace_id, Job.id == job_id))
    if job is None:
        raise NotFoundError(f"No job {job_id!r}.",
                            hint="List them with `kaon jobs list` (GET /api/v1/jobs).")
    return job


def request_cancel(session: Session, workspace_id: str, job_id: str,
                   now: datetime | None = None) -> Job:
    """Cancel a queued job now, or ask a running one's worker to stop. Idempotent."""
    job = get_job(session, workspace_id, job_id)
    now = now or utcnow()
    # conditional, so a worker claiming the job at this moment cannot be overwritten
    session.execute(update(Job).where(Job.id == job.id, Job.state == "queued")
                    .values(state="cancelled", cancel_requested=True, finished_at=now)
                    .execution_options(synchronize_session=False))
    session.execute(update(Job).where(Job.id == job.id, Job.state == "running")
                    .values(cancel_requested=True)
                    .execution_options(synchronize_session=False))
    session.refresh(job)
    if job.state in ("succeeded", "failed"):
        raise ConflictError(f"Job {job.id} already {job.state}.")
    return job
