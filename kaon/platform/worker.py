"""Job workers: claim queued jobs from the database and run each attempt in a child process.

The queue is the ``jobs`` table itself, so it works the same on SQLite and PostgreSQL and
survives restarts. A claim is a conditional UPDATE (``state = 'queued'``), so two workers
never take the same job. While a child runs, the worker heartbeats every second: it stamps
``heartbeat_at``, adds the elapsed compute time to the job and meters whole compute-seconds
as usage events *in the same transaction* (keyed by job, attempt and beat, so nothing is
counted twice). A worker that stops beating (killed, machine lost) is noticed by any other
worker's reaper, which puts the job back in the queue: its next attempt resumes from the
run's last checkpoint. A cancel request stops the child with SIGINT (the trainer keeps its
checkpoint), then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kaon.config import get_settings
from kaon.db.engine import session_scope
from kaon.db.models import utcnow
from kaon.platform import billing, quota
from kaon.platform.errors import QuotaExceeded
from kaon.platform.jobrun import job_dir
from kaon.platform.models import Job


@dataclass(frozen=True)
class WorkerConfig:
    poll_s: float = 0.5  # how often an idle worker looks for work
    heartbeat_s: float = 1.0
    # a running job without a beat for this long lost its worker (KAON_JOB_STALE_S)
    stale_s: float = field(default_factory=lambda: get_settings().job_stale_s)
    grace_s: float = 15.0  # SIGINT → SIGKILL on cancel


class JobWorker:
    def __init__(self, worker_id: str | None = None, config: WorkerConfig | None = None) -> None:
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.config = config or WorkerConfig()

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, max_jobs: int | None = None) -> int:
        """Work until ``stop`` is set (or ``max_jobs`` are done); returns the jobs run."""
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            self.reap()
            job_id = self.claim()
            if job_id is None:
                stop.wait(self.config.poll_s)
                continue
            self.execute(job_id, stop)
            done += 1
        return done

    def claim(self) -> str | None:
        """Take a queued job (atomic: a conditional UPDATE on its state): the oldest of the
        workspace with the fewest running jobs, so that one workspace's flood of jobs does
        not hold every worker while the others wait."""
        with session_scope() as s:
            running = dict(s.execute(select(Job.workspace_id, func.count())
                                     .where(Job.state == "running")
                                     .group_by(Job.workspace_id)).all())
            oldest = (select(Job.workspace_id, func.min(Job.created_at).label("first"))
                      .where(Job.state == "queued").group_by(Job.workspace_id).subquery())
            firsts = s.execute(select(Job.id, Job.workspace_id).join(
                oldest, (Job.workspace_id == oldest.c.workspace_id)
                & (Job.created_at == oldest.c.first)).where(Job.state == "queued")
                .order_by(Job.created_at)).all()
            candidates = [job_id for job_id, ws in
                          sorted(firsts, key=lambda row: running.get(row[1], 0))][:8]
            for job_id in candidates:
                now = utcnow()
                taken = s.execute(
                    update(Job).where(Job.id == job_id, Job.state == "queued")
                    .values(state="running", worker_id=self.id, attempts=Job.attempts + 1,
                            heartbeat_at=now, started_at=now, error=None)
                    .execution_options(synchronize_session=False)).rowcount
                if taken == 1:
                    return job_id
        return None

    def reap(self) -> list[str]:
        """Requeue running jobs whose worker stopped beating (or fail them when out of tries)."""
        cutoff = utcnow() - timedelta(seconds=self.config.stale_s)
        requeued = []
        with session_scope() as s:
            stale = s.scalars(select(Job).where(Job.state == "running",
                                                Job.heartbeat_at < cutoff)).all()
            for job in stale:
                retry = job.attempts < job.max_attempts and not job.cancel_requested
                values = ({"state": "queued", "worker_id": None} if retry else {
                    "state": "cancelled" if job.cancel_requested else "failed",
                    "finished_at": utcnow(),
                    "error": f"its worker {job.worker_id} stopped responding "
                             f"{job.attempts} time(s)"})
                moved = s.execute(
                    update(Job).where(Job.id == job.id, Job.state == "running",
                                      Job.heartbeat_at == job.heartbeat_at)
                    .values(**values).execution_options(synchronize_session=False)).rowcount
                if moved and retry:
                    requeued.append(job.id)
                    _log(job.id, f"[worker {self.id}] attempt {job.attempts}'s worker "
                                 f"{job.worker_id} stopped responding; requeued")
        return requeued

    # -- one attempt ----------------------------------------------------------------------
    def execute(self, job_id: str, stop: threading.Event | None = None) -> str:
        """Run one attempt of a claimed job to its end; returns the job's new state."""
        with session_scope() as s:
            attempt = s.get(Job, job_id).attempts  # type: ignore[union-attr]
        directory = job_dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "result.json").unlink(missing_ok=True)
        _log(job_id, f"[worker {self.id}] attempt {attempt} starts")
        with (directory / "log.txt").open("ab") as log:
            child = subprocess.Popen([sys.executable, "-m", "kaon.platform.jobrun", job_id],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ,
                                                                    "PYTHONUNBUFFERED": "1"})
        last = time.monotonic()
        carry, beat, cancelled_at = 0.0, 0, None
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=self.config.heartbeat_s)
            now = time.monotonic()
            elapsed, last = now - last, now
            carry += elapsed
            beat += 1
            whole, carry = int(carry), carry - int(carry)
            cancel = self._beat(job_id, attempt, beat, elapsed, whole)
            if child.poll() is not None:
                break
            if (cancel or (stop is not None and stop.is_set())) and cancelled_at is None:
                child.send_signal(signal.SIGINT)  # the trainer saves and stops
                cancelled_at = now
            elif cancelled_at is not None and now - cancelled_at > self.config.grace_s:
                child.kill()
        if carry >= 0.5:  # the last partial second, rounded
            self._beat(job_id, attempt, beat + 1, 0.0, 1)
        return self._finish(job_id, attempt, child.returncode, cancelled_at is not None, stop)

    def _beat(self, job_id: str, attempt: int, beat: int, elapsed: float, whole: int) -> bool:
        """Heartbeat, compute time and metered seconds in one transaction; True on cancel."""
        with session_scope() as s:
            job = s.get(Job, job_id)
            if job is None or job.worker_id != self.id:
                return True  # reaped or deleted: stop
            job.heartbeat_at = utcnow()
            job.compute_seconds = (job.compute_seconds or 0.0) + elapsed
            if whole and not self._meter(s, job, whole, f"{job_id}:{attempt}:{beat}") \
                    and not job.cancel_requested:
                job.cancel_requested = True  # over a hard cap: the job stops, as if cancelled
                job.error = "stopped: the plan's training seconds for the month are used up"
                _log(job_id, f"[worker {self.id}] {job.error}")
            return bool(job.cancel_requested)

    @staticmethod
    def _meter(s: Session, job: Job, seconds: int, key: str) -> bool:
        """Meter ``seconds`` of ``job``; False when a hard-capped plan had fewer left (what
        was left is metered). Submission only checks that some are left: this is the cap."""
        plan = billing.current_plan(s, job.workspace_id)
        left = quota.remaining(s, job.workspace_id, "training_seconds", plan)
        take = seconds if left is None else min(seconds, left)
        try:
            if take:
                quota.check_and_consume(s, job.workspace_id, "training_seconds", take, plan,
                                        event_key=key, source={"job": job.id})
        except QuotaExceeded:  # another job took the rest first
            return False
        return take == seconds

    def _finish(self, job_id: str, attempt: int, code: int, stopped: bool,
                stop: threading.Event | None) -> str:
        import json

        result_file = job_dir(job_id) / "result.json"
        with session_scope() as s:
            job = s.get(Job, job_id)
            assert job is not None
            if code == 0 and result_file.is_file():
                job.state, job.result = "succeeded", json.loads(result_file.read_text())
            elif stopped and job.cancel_requested:
                job.state = "cancelled"
            elif stopped or code < 0 or code in (70, 130):
                # killed (by us on shutdown, by a signal, or orphaned): the next attempt resumes
                retry = job.attempts < job.max_attempts
                job.state = "queued" if retry else "failed"
                job.error = f"attempt {attempt} ended by signal or shutdown (exit {code})"
            else:  # the job's own fault (bad spec, bad data): retrying cannot help
                job.state = "failed"
                job.error = _last_error(job_dir(job_id) / "log.txt") or f"exit code {code}"
            if job.state != "queued":
                job.finished_at = utcnow()
            job.worker_id = None
            state = job.state
        _log(job_id, f"[worker {self.id}] attempt {attempt} ended: {state}")
        return state


def _log(job_id: str, line: str) -> None:
    directory = job_dir(job_id)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "log.txt").open("a") as f:
        f.write(line + "\n")


def _last_error(log: Path) -> str | None:
    if not log.is_file():
        return None
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors[-1] if errors else lines[-1] if lines else "")[:2000] or None


def main() -> None:
    """``python -m kaon.platform.worker``: one worker in the foreground until SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a running job stops and is requeued
        signal.signal(sig, lambda *_: stop.set())
    JobWorker().run(stop)


if __name__ == "__main__":
    main()
