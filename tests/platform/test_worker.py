"""Job workers on real training: success, failure, cancel, and a killed worker's retry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kaon.db.engine import session_scope
from kaon.errors import NotFoundError
from kaon.platform import jobs, metering
from kaon.platform.jobrun import job_dir
from kaon.platform.models import Job
from kaon.platform.worker import JobWorker, WorkerConfig
from kaon.platform.workspaces import bootstrap
from kaon.registry import get
from kaon.train import runs
from kaon.train.checkpoint import CHECKPOINT

pytestmark = pytest.mark.serial  # real training jobs, killed and timed: run alone (Makefile)


def spec(epochs: int = 2, dataset: str = "breastmnist", **extra: Any) -> dict[str, Any]:
    return {"name": "breast-job", "data": {"dataset": dataset, "val_fraction": 0.2},
            "model": {"family": "mlp", "hidden": [32]}, "epochs": epochs, "batch_size": 32,
            "register": {"name": "breast-job"}, **extra}


def submit(body: dict[str, Any], max_attempts: int = 3) -> str:
    with session_scope() as s:
        bootstrap(s)
        return jobs.submit_job(s, "default", "train", body, max_attempts=max_attempts).id


def job(job_id: str) -> Job:
    with session_scope() as s:
        row = s.get(Job, job_id)
        assert row is not None
        s.expunge(row)
        return row


def wait_for(predicate: Any, timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_train_job_runs_registers_and_meters_compute(shared_datasets: Path) -> None:
    job_id = submit(spec(epochs=2))
    assert JobWorker(config=WorkerConfig(poll_s=0.1)).run(max_jobs=1) == 1
    done = job(job_id)
    assert done.state == "succeeded", (job_dir(job_id) / "log.txt").read_text()
    assert done.attempts == 1 and done.result is not None
    assert done.result["model"] == "breast-job"
    assert get("breast-job:1").metrics["test_accuracy"] > 0.5
    assert runs.get_run(done.run_id).status == "succeeded"  # type: ignore[arg-type]
    log = (job_dir(job_id) / "log.txt").read_text()
    assert "epoch 1:" in log and "epoch 2:" in log
    with session_scope() as s:
        period = done.created_at.strftime("%Y-%m")
        usage = metering.usage(s, "default", period)
        seconds = usage.get("training_seconds", 0)
    assert seconds >= 1
    assert usage["storage_bytes"] > 1000  # the registered weights, metered with the version
    assert abs(seconds - done.compute_seconds) <= 1.5  # metered ≈ measured, whole seconds


@pytest.mark.slow
def test_a_job_at_fault_fails_once_with_its_error(shared_datasets: Path) -> None:
    # a valid spec whose model does not fit the data: found only once the data is loaded
    job_id = submit(spec(model={"layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]}))
    JobWorker(config=WorkerConfig(poll_s=0.1)).run(max_jobs=1)
    failed = job(job_id)
    assert failed.state == "failed" and failed.attempts == 1
    assert "needs 2" in (failed.error or "")


@pytest.mark.slow
def test_a_job_whose_model_would_pass_the_storage_cap_fails_saying_what_to_do(
        shared_datasets: Path) -> None:
    from sqlalchemy import update

    from kaon.platform.models import UsageCounter
    from kaon.platform.plans import get_catalog

    job_id = submit(spec(epochs=1))  # the default workspace is on the hard-capped free plan
    full = get_catalog().get("free").storage_bytes
    with session_scope() as s:
        metering.record(s, "default", "storage_bytes", 1, "seed")
        s.execute(update(UsageCounter).where(UsageCounter.period == metering.STORED)
                  .values(used=full))
    JobWorker(config=WorkerConfig(poll_s=0.1)).run(max_jobs=1)
    failed = job(job_id)
    assert failed.state == "failed" and failed.attempts == 1, _log(job_id)
    assert "breast-job:1" in (failed.error or "") and "not registered" in (failed.error or "")
    assert "Delete model versions" in (failed.error or "")
    with pytest.raises(NotFoundError):
        get("breast-job")
    with session_scope() as s:
        assert metering.stored(s, "default") == full


def test_a_job_on_an_unknown_dataset_is_refused_at_submission(kaon_home: Path) -> None:
    with pytest.raises(NotFoundError, match="no-such-data"):
        submit(spec(data={"dataset": "no-such-data"}))


@pytest.mark.slow
@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_a_running_job_is_cancelled(shared_datasets: Path, sigint: str) -> None:
    # "ignored": the worker was started with SIGINT ignored (`kaon up &` in a script, nohup),
    # which its job processes inherit; they must still stop on the worker's SIGINT
    before = signal.getsignal(signal.SIGINT)
    if sigint == "ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        job_id = submit(spec(epochs=200))
        worker = JobWorker(config=WorkerConfig(poll_s=0.1, grace_s=20))
        thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 1})
        thread.start()
        wait_for(lambda: "epoch 1:" in _log(job_id), what="the first epoch")
        with session_scope() as s:
            jobs.request_cancel(s, "default", job_id)
        thread.join(timeout=60)
    finally:
        signal.signal(signal.SIGINT, before)
    assert not thread.is_alive()
    assert job(job_id).state == "cancelled", _log(job_id)


@pytest.mark.slow
def test_a_killed_worker_s_job_resumes_from_its_checkpoint(shared_datasets: Path,
                                                           kaon_home: Path) -> None:
    job_id = submit(spec(epochs=40))
    env = {**os.environ, "KAON_HOME": str(kaon_home), "KAON_JOB_STALE_S": "3"}
    first = subprocess.Popen([sys.executable, "-m", "kaon.platform.worker"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        def checkpointed() -> bool:
            run_id = job(job_id).run_id
            return bool(run_id) and (runs.get_run(run_id).directory / CHECKPOINT).is_file()

        wait_for(checkpointed, what="a checkpoint")
        run_id = job(job_id).run_id
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = subprocess.Popen([sys.executable, "-m", "kaon.platform.worker"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: job(job_id).state in ("succeeded", "failed"), timeout=180,
                 what="the retried job")
        done = job(job_id)
        assert done.state == "succeeded", _log(job_id)
        assert done.attempts == 2 and done.run_id == run_id
        assert "resuming run" in _log(job_id)
        assert runs.get_run(run_id).status == "succeeded"  # type: ignore[arg-type]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def _log(job_id: str) -> str:
    path = job_dir(job_id) / "log.txt"
    return path.read_text() if path.is_file() else ""


@pytest.mark.slow
def test_a_tune_job_registers_its_model_in_the_job_s_workspace(shared_datasets: Path) -> None:
    with session_scope() as s:
        bootstrap(s)
        job_id = jobs.submit_job(s, "default", "tune", {
            "dataset": "breastmnist", "time_seconds": 45, "model_name": "breast-auto",
            "space": {"families": ["mlp"], "epochs": {"low": 2, "high": 4}}}).id
    JobWorker(config=WorkerConfig(poll_s=0.1)).run(max_jobs=1)
    done = job(job_id)
    assert done.state == "succeeded", _log(job_id)
    assert done.result is not None and done.result["model"].startswith("breast-auto:")
    info = get(done.result["model"])
    assert info.lineage["study"] == done.result["study"]
    assert "tuning breastmnist" in _log(job_id)


def test_a_tune_request_is_checked_before_it_is_queued() -> None:
    from kaon.errors import ConfigError

    with session_scope() as s:
        bootstrap(s)
        with pytest.raises(ConfigError, match="time_seconds"):
            jobs.submit_job(s, "default", "tune", {"dataset": "breastmnist"})
        with pytest.raises(ConfigError, match="workspace"):
            jobs.submit_job(s, "default", "tune", {"dataset": "breastmnist",
                                                   "time_seconds": 60, "workspace": "other"})


@pytest.mark.slow
def test_a_hard_capped_job_is_stopped_at_the_cap_and_metered_to_it(
        shared_datasets: Path) -> None:
    from kaon.db.models import utcnow
    from kaon.platform.common import period_of
    from kaon.platform.plans import get_catalog

    cap = get_catalog().get("free").included_training_seconds
    job_id = submit(spec(epochs=500))  # the default workspace is on the hard-capped free plan
    with session_scope() as s:
        metering.record(s, "default", "training_seconds", cap - 2, "earlier-jobs")
    JobWorker(config=WorkerConfig(poll_s=0.1, grace_s=20)).run(max_jobs=1)
    stopped = job(job_id)
    assert stopped.state == "cancelled" and "used up" in (stopped.error or ""), _log(job_id)
    with session_scope() as s:
        used = metering.usage(s, "default", period_of(utcnow()))["training_seconds"]
    assert used == cap  # the last seconds up to the cap, and nothing past it


def test_workers_take_the_least_busy_workspace_first_and_the_queue_is_bounded(
        shared_datasets: Path) -> None:
    from kaon.errors import KaonError
    from kaon.platform.workspaces import BOOTSTRAP_OWNER, create_workspace

    first = [submit(spec()) for _ in range(3)]  # the default workspace was first...
    with session_scope() as s:
        other = create_workspace(s, "other", BOOTSTRAP_OWNER)[0].id
        late = jobs.submit_job(s, other, "train", spec()).id  # ...this one came last
        s.get(Job, first[0]).state = "running"  # type: ignore[union-attr]
    assert JobWorker().claim() == late  # not the default workspace's second job
    with session_scope() as s:
        for _ in range(jobs.MAX_QUEUED - 2):
            jobs.submit_job(s, "default", "train", spec())
        with pytest.raises(KaonError, match=f"at most {jobs.MAX_QUEUED}"):
            jobs.submit_job(s, "default", "train", spec())
