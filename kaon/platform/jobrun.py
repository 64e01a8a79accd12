"""One attempt of one job, in its own process: ``python -m kaon.platform.jobrun JOB_ID``.

Started by a :class:`~kaon.platform.worker.JobWorker`. A train job whose earlier attempt
left a checkpoint resumes from it; otherwise it trains from the start. Epoch lines go to
stdout (the job's log); the result goes to ``result.json`` beside the log. The process exits
with 0 on success, with a :class:`~kaon.errors.KaonError`'s exit code when the job itself is
at fault (no retry helps), and dies with its worker (it polls its parent).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from kaon.config import get_settings
from kaon.procs import exit_when_orphaned


def job_dir(job_id: str) -> Path:
    return get_settings().home / "jobs" / job_id


class EpochLog:
    """A callback printing one line per epoch, flushed, for ``kaon jobs logs``."""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        values = "  ".join(f"{k} {v:.4g}" for k, v in logs.items())
        print(f"epoch {epoch}: {values}", flush=True)


def run(job_id: str) -> dict[str, Any]:
    from kaon.db.engine import session_scope
    from kaon.nn.spec import parse_spec
    from kaon.platform.models import Job
    from kaon.train import runs
    from kaon.train.api import resume, train
    from kaon.train.checkpoint import CHECKPOINT

    with session_scope() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise SystemExit(f"no job {job_id}")
        spec, workspace, run_id, kind = job.spec, job.workspace_id, job.run_id, job.kind
    if kind == "tune":
        return _tune(job_id, spec, workspace)

    def remember(new_run: str) -> None:
        with session_scope() as s:
            row = s.get(Job, job_id)
            if row is not None:
                row.run_id = new_run
        print(f"run {new_run}", flush=True)

    callbacks: list[Any] = [EpochLog()]
    if run_id and (runs.get_run(run_id, workspace).directory / CHECKPOINT).is_file():
        print(f"resuming run {run_id} from its last checkpoint", flush=True)
        result = resume(run_id, callbacks=callbacks, workspace=workspace)
    else:
        result = train(parse_spec(spec, source=f"job {job_id}"), callbacks=callbacks,
                       workspace=workspace, on_run_created=remember)
    return result.to_dict()


def _tune(job_id: str, spec: dict[str, Any], workspace: str) -> dict[str, Any]:
    """A `kaon tune` search; a retried attempt starts a new study (trials are not shared)."""
    from kaon.tune.study import TuneConfig, tune

    cfg = TuneConfig.model_validate({**spec, "workspace": workspace})
    print(f"tuning {cfg.dataset} for {cfg.time_seconds:.0f} s", flush=True)
    result = tune(cfg)
    print(f"study {result.study}: best {result.best_value}, registered {result.model}",
          flush=True)
    out = result.to_dict()  # the report's files under KAON_HOME, not the server's own paths
    home = get_settings().home
    out["report"] = {k: _under(v, home) for k, v in out["report"].items()}
    for point in out.get("pareto") or []:
        if isinstance(point, dict) and "spec" in point:
            point["spec"] = _under(str(point["spec"]), home)
    return out


def _under(path: str, home: Path) -> str:
    """``path`` relative to ``home`` (its file name when it is elsewhere)."""
    try:
        return Path(path).relative_to(home).as_posix()
    except ValueError:
        return Path(path).name


def main(argv: list[str] | None = None) -> int:
    from kaon.errors import KaonError

    job_id = (argv or sys.argv[1:])[0]
    # the worker cancels with SIGINT: honour it even when it came ignored from the worker's
    # own start (`kaon up &` in a script, nohup), which Python would otherwise keep
    signal.signal(signal.SIGINT, signal.default_int_handler)
    exit_when_orphaned(70)  # the worker died: its job will be retried elsewhere
    out = job_dir(job_id)
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = run(job_id)
    except KaonError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code or 1  # 130: interrupted (the worker requeues it)
    (out / "result.json").write_text(json.dumps(result, default=str))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
