"""Job and deployment records: validation, plan limits, cancellation states, tenancy."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from kaon.errors import ConfigError, NotFoundError
from kaon.platform import deployments, jobs, metering
from kaon.platform.errors import ConflictError, PlanLimitError, QuotaExceeded
from kaon.platform.models import Workspace
from kaon.platform.plans import get_catalog
from tests.platform.helpers import TRAIN_SPEC, register_model

A, B = "ws-aaaaaaaaaaaa", "ws-bbbbbbbbbbbb"


@pytest.fixture
def db(sqlite_db: Session) -> Session:
    sqlite_db.add_all([Workspace(id=A, name="a"), Workspace(id=B, name="b")])
    sqlite_db.flush()
    return sqlite_db


def test_jobs_are_validated_and_queued(db: Session) -> None:
    free, pro = get_catalog().get("free"), get_catalog().get("pro")
    job = jobs.submit_job(db, A, "train", TRAIN_SPEC, plan=free)
    assert (job.state, job.attempts, job.max_attempts, job.cancel_requested) == (
        "queued", 0, 3, False)
    with pytest.raises(ConfigError, match="epochs"):
        jobs.submit_job(db, A, "train", {**TRAIN_SPEC, "epochs": 0}, plan=free)
    with pytest.raises(ConfigError):
        jobs.submit_job(db, A, "bake", {}, plan=free)
    with pytest.raises(PlanLimitError, match="automl"):
        jobs.submit_job(db, A, "tune", {"dataset": "mnist", "time_seconds": 60}, plan=free)
    assert jobs.submit_job(db, A, "tune", {"dataset": "mnist", "time_seconds": 60},
                           plan=pro).kind == "tune"
    for unbounded in ({"time_seconds": 1e300}, {"trial_seconds": 1e300}, {"seed": 2**80},
                      {"workers": 4}, {"cv_folds": 1}, {"cv_folds": 11}):  # POST /jobs
        # gets the bounds POST /tune has
        with pytest.raises(ConfigError, match="Invalid tuning request"):
            jobs.submit_job(db, A, "tune", {"dataset": "mnist", "time_seconds": 60,
                                            **unbounded}, plan=pro)
    folds = jobs.submit_job(db, A, "tune", {"dataset": "mnist", "time_seconds": 60,
                                            "cv_folds": 5, "robust": False}, plan=pro)
    assert (folds.spec["cv_folds"], folds.spec["robust"]) == (5, False)
    metering.record(db, A, "training_seconds", free.included_training_seconds, "used-up")
    with pytest.raises(QuotaExceeded):
        jobs.submit_job(db, A, "train", TRAIN_SPEC, plan=free)
    assert [j.kind for j in jobs.list_jobs(db, A)] == ["tune", "tune", "train"]
    assert jobs.list_jobs(db, B) == []
    with pytest.raises(NotFoundError):
        jobs.get_job(db, B, job.id)


def test_cancel_a_queued_job_now_a_running_one_by_request(db: Session) -> None:
    queued = jobs.submit_job(db, A, "train", TRAIN_SPEC)
    running = jobs.submit_job(db, A, "train", TRAIN_SPEC)
    done = jobs.submit_job(db, A, "train", TRAIN_SPEC)
    running.state, done.state = "running", "succeeded"
    db.flush()
    cancelled = jobs.request_cancel(db, A, queued.id)
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    assert jobs.request_cancel(db, A, queued.id).state == "cancelled"  # idempotent
    asked = jobs.request_cancel(db, A, running.id)
    assert (asked.state, asked.cancel_requested) == ("running", True)
    with pytest.raises(ConflictError):
        jobs.request_cancel(db, A, done.id)
    with pytest.raises(NotFoundError):
        jobs.request_cancel(db, B, running.id)
    assert [j.id for j in jobs.list_jobs(db, A, state="cancelled")] == [queued.id]


def test_deployments_check_the_model_and_the_plan(db: Session) -> None:
    free, pro = get_catalog().get("free"), get_catalog().get("pro")
    register_model(db, A)
    with pytest.raises(NotFoundError, match="registered"):
        deployments.create_deployment(db, B, "web", "mnist-mlp", plan=pro)  # A's model
    with pytest.raises(NotFoundError):
        deployments.create_deployment(db, A, "web", "mnist-mlp", plan=pro, version=7)
    with pytest.raises(PlanLimitError, match="replica"):
        deployments.create_deployment(db, A, "web", "mnist-mlp", plan=free, replicas=2)
    web = deployments.create_deployment(db, A, "web", "mnist-mlp", plan=free)
    assert (web.version, web.state, web.replicas) == (2, "pending", 1)
    with pytest.raises(ConflictError):
        deployments.create_deployment(db, A, "web", "mnist-mlp", plan=pro)
    with pytest.raises(PlanLimitError, match="allows 1 deployment"):
        deployments.create_deployment(db, A, "web2", "mnist-mlp", plan=free, version=1)
    with pytest.raises(ConfigError):
        deployments.create_deployment(db, A, "Bad Name", "mnist-mlp", plan=pro)
    scaled = deployments.scale_deployment(db, A, "web", plan=pro, replicas=4, max_wait_ms=2)
    assert (scaled.replicas, scaled.max_wait_ms, scaled.max_batch_size) == (4, 2.0, 32)
    with pytest.raises(PlanLimitError):
        deployments.scale_deployment(db, A, "web", plan=pro, replicas=5)
    with pytest.raises(ConfigError):
        deployments.scale_deployment(db, A, "web", plan=pro, max_batch_size=0)
    with pytest.raises(NotFoundError):
        deployments.scale_deployment(db, B, "web", plan=pro, replicas=1)
    with pytest.raises(NotFoundError):
        deployments.get_deployment(db, A, "../web")
    assert [d.name for d in deployments.list_deployments(db, A)] == ["web"]
    with pytest.raises(NotFoundError):
        deployments.delete_deployment(db, B, "web")
    deployments.delete_deployment(db, A, "web")
    assert deployments.list_deployments(db, A) == []
