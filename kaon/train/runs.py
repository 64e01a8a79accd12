"""Run records in SQL: one row per run, one row per completed epoch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from kaon.db import session_scope
from kaon.db.models import DEFAULT_WORKSPACE, EpochMetric, Run, new_id
from kaon.errors import NotFoundError


@dataclass(frozen=True)
class RunInfo:
    id: str
    name: str
    status: str
    spec: dict[str, Any]
    dataset: str
    dataset_hash: str
    directory: Path
    epochs_done: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]]


def create_run(name: str, spec: dict[str, Any], dataset: str, dataset_hash: str, root: Path,
               workspace: str = DEFAULT_WORKSPACE, run_id: str | None = None) -> RunInfo:
    """``run_id``: an id from :func:`new_run_id` that the caller announced before the run
    existed (a tuning trial tells its parent first, so a kill can never orphan the run)."""
    run_id = run_id or new_run_id()
    directory = root / run_id
    directory.mkdir(parents=True, exist_ok=True)
    with session_scope() as db:
        db.add(Run(id=run_id, workspace_id=workspace, name=name, status="running", spec=spec,
                   dataset=dataset, dataset_hash=dataset_hash, directory=str(directory),
                   metrics={}))
    return get_run(run_id, workspace)


def new_run_id() -> str:
    return new_id("run")


def get_run(run_id: str, workspace: str = DEFAULT_WORKSPACE) -> RunInfo:
    with session_scope() as db:
        run = db.get(Run, run_id)
        if run is None or run.workspace_id != workspace:
            recent = db.scalars(select(Run.id).where(Run.workspace_id == workspace)
                                .order_by(Run.created_at.desc()).limit(5)).all()
            raise NotFoundError(f"No run {run_id!r}. Recent runs: {', '.join(recent) or '(none)'}.",
                                hint="Run ids are printed by `kaon train` (and in --json).")
        return RunInfo(
            id=run.id, name=run.name, status=run.status, spec=run.spec, dataset=run.dataset,
            dataset_hash=run.dataset_hash, directory=Path(run.directory),
            epochs_done=run.epochs_done, metrics=dict(run.metrics or {}),
            history=[{"epoch": e.epoch, **e.values} for e in run.epochs],
        )


def record_epoch(run_id: str, epoch: int, values: dict[str, Any]) -> None:
    """Store one epoch's metrics; replaying an epoch after a resume overwrites it."""
    with session_scope() as db:
        run = db.get(Run, run_id)
        assert run is not None
        existing = db.scalar(select(EpochMetric).where(EpochMetric.run_id == run_id,
                                                       EpochMetric.epoch == epoch))
        if existing is None:
            db.add(EpochMetric(run_id=run_id, epoch=epoch, values=values))
        else:
            existing.values = values
        run.epochs_done = epoch


def set_status(run_id: str, status: str, metrics: dict[str, Any] | None = None,
               error: str | None = None) -> None:
    with session_scope() as db:
        run = db.get(Run, run_id)
        assert run is not None
        run.status = status
        if metrics is not None:
            run.metrics = {**(run.metrics or {}), **metrics}
        run.error = error
