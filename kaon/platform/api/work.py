"""Routes: jobs and deployments (records only; workers and the runtime act on them)."""

from __future__ import annotations

import codecs
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import Field
from sqlalchemy.orm import Session

from kaon.platform import billing, deployments, jobs
from kaon.platform.api.deps import DB, Deployer, Reader, Trainer
from kaon.platform.api.schemas import (
    DeploymentCreate,
    DeploymentOut,
    DeploymentScale,
    JobCreate,
    JobOut,
)
from kaon.platform.audit import audit
from kaon.platform.common import lock_workspace
from kaon.platform.jobrun import job_dir

router = APIRouter()
MAX_LOG_CHUNK = 1024 * 1024


class TuneRequest(jobs.TuneSpec):
    """What `kaon tune` takes: a dataset and a time budget (see docs/tune.md)."""

    max_attempts: int = Field(default=1, ge=1, le=10, exclude=True)
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


# ---- jobs ---------------------------------------------------------------------------------
@router.post("/jobs", response_model=JobOut, status_code=201,
             summary="Queue a training or tuning job")
def submit_job(body: JobCreate, db: DB, principal: Trainer) -> JobOut:
    lock_workspace(db, principal.workspace_id)
    plan = billing.current_plan(db, principal.workspace_id)
    job = jobs.submit_job(db, principal.workspace_id, body.kind, body.spec, plan=plan,
                          max_attempts=body.max_attempts)
    audit(db, principal, "job.submit", job.id, {"kind": job.kind})
    return JobOut.model_validate(job)


@router.get("/jobs", response_model=list[JobOut], summary="Jobs, newest first")
def list_jobs(db: DB, principal: Reader, state: JobState | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobOut]:
    return [JobOut.model_validate(j)
            for j in jobs.list_jobs(db, principal.workspace_id, state, limit)]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job")
def get_job(job_id: str, db: DB, principal: Reader) -> JobOut:
    return JobOut.model_validate(jobs.get_job(db, principal.workspace_id, job_id))


@router.get("/jobs/{job_id}/logs", summary="The job's log from a byte offset",
            response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "log text; X-Log-Offset is where to go on from, "
                                            "X-Job-State the job's state"}})
def job_logs(job_id: str, db: DB, principal: Reader,
             offset: Annotated[int, Query(ge=0, le=2**40)] = 0) -> PlainTextResponse:
    job = jobs.get_job(db, principal.workspace_id, job_id)
    log = job_dir(job.id) / "log.txt"
    text = b""
    if log.is_file():
        with log.open("rb") as f:
            offset = min(offset, f.seek(0, 2))  # past the end: the end
            f.seek(offset)
            text = f.read(MAX_LOG_CHUNK)
        if len(text) == MAX_LOG_CHUNK:
            text = _whole_characters(text)
    return PlainTextResponse(text.decode("utf-8", errors="replace"), headers={
        "X-Log-Offset": str(offset + len(text)), "X-Job-State": job.state})


def _whole_characters(chunk: bytes) -> bytes:
    """``chunk`` without a UTF-8 character cut off at its end: the next read starts on it, so
    a log read in chunks is put back together exactly."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(chunk[-3:])  # a character cut off leaves at most 3 of its bytes
    return chunk[:len(chunk) - len(decoder.getstate()[0])]  # less the bytes it holds back


@router.post("/tune", response_model=JobOut, status_code=201,
             summary="Queue a `kaon tune` search (a job of kind 'tune')")
def submit_tune(body: TuneRequest, db: DB, principal: Trainer) -> JobOut:
    lock_workspace(db, principal.workspace_id)
    plan = billing.current_plan(db, principal.workspace_id)
    spec = body.model_dump(exclude_none=True, exclude_unset=True)  # the space's own defaults
    job = jobs.submit_job(db, principal.workspace_id, "tune", spec, plan=plan,
                          max_attempts=body.max_attempts)
    audit(db, principal, "job.submit", job.id, {"kind": "tune"})
    return JobOut.model_validate(job)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut,
             summary="Cancel a queued job, or ask a running one to stop")
def cancel_job(job_id: str, db: DB, principal: Trainer) -> JobOut:
    job = jobs.request_cancel(db, principal.workspace_id, job_id)
    audit(db, principal, "job.cancel", job.id, {"state": job.state})
    return JobOut.model_validate(job)


# ---- models -------------------------------------------------------------------------------
def _model_out(info: Any) -> dict[str, Any]:
    out = info.to_dict()
    out.pop("artifact")  # a path on the server: not the caller's business
    return out


@router.get("/models", summary="The workspace's registered model versions, by name and version")
def list_models(principal: Reader) -> list[dict[str, Any]]:
    from kaon.registry import list_models as registered  # imports torch: only when asked

    return [_model_out(m) for m in registered(principal.workspace_id)]


@router.get("/models/{ref}", summary="One model version: NAME (latest), NAME:VERSION or "
                                     "NAME@ALIAS, with its metrics, signature and lineage")
def get_model(ref: Annotated[str, Path(max_length=140)], principal: Reader) -> dict[str, Any]:
    from kaon.registry import get

    return _model_out(get(ref, principal.workspace_id))


# ---- deployments --------------------------------------------------------------------------
def _reconcile_on_commit(request: Request, db: Session, deleted: str | None = None) -> None:
    """Under ``kaon up`` the deployment runtime acts on the change as soon as it commits."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        runtime.after_commit(db, deleted)


@router.post("/deployments", response_model=DeploymentOut, status_code=201,
             summary="Deploy a registered model (within the plan's limits)")
def create_deployment(body: DeploymentCreate, db: DB, principal: Deployer,
                      request: Request) -> DeploymentOut:
    lock_workspace(db, principal.workspace_id)  # the plan cannot change until this commits
    plan = billing.limits_plan(db, principal.workspace_id)
    row = deployments.create_deployment(
        db, principal.workspace_id, body.name, body.model, plan=plan, version=body.version,
        replicas=body.replicas, max_batch_size=body.max_batch_size,
        max_wait_ms=body.max_wait_ms)
    audit(db, principal, "deployment.create", row.name,
          {"model": row.model, "version": row.version, "replicas": row.replicas})
    _reconcile_on_commit(request, db)
    return DeploymentOut.model_validate(row)


@router.get("/deployments", response_model=list[DeploymentOut], summary="Deployments, by name")
def list_deployments(db: DB, principal: Reader) -> list[DeploymentOut]:
    return [DeploymentOut.model_validate(d)
            for d in deployments.list_deployments(db, principal.workspace_id)]


@router.get("/deployments/{name}", response_model=DeploymentOut, summary="One deployment")
def get_deployment(name: str, db: DB, principal: Reader) -> DeploymentOut:
    return DeploymentOut.model_validate(
        deployments.get_deployment(db, principal.workspace_id, name))


@router.patch("/deployments/{name}", response_model=DeploymentOut,
              summary="Scale a deployment or change its batching")
def scale_deployment(name: str, body: DeploymentScale, db: DB, principal: Deployer,
                     request: Request) -> DeploymentOut:
    lock_workspace(db, principal.workspace_id)
    plan = billing.limits_plan(db, principal.workspace_id)
    row = deployments.scale_deployment(db, principal.workspace_id, name, plan=plan,
                                       **body.model_dump(exclude_none=True))
    audit(db, principal, "deployment.scale", row.name, body.model_dump(exclude_none=True))
    _reconcile_on_commit(request, db)
    return DeploymentOut.model_validate(row)


@router.delete("/deployments/{name}", status_code=204, summary="Delete a deployment")
def delete_deployment(name: str, db: DB, principal: Deployer, request: Request) -> Response:
    row = deployments.delete_deployment(db, principal.workspace_id, name)
    audit(db, principal, "deployment.delete", row.name, {"model": row.model})
    _reconcile_on_commit(request, db, deleted=row.id)  # served no more once the 204 is sent
    return Response(status_code=204)
