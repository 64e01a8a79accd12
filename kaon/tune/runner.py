"""Run one trial in a subprocess: report its epochs to Optuna, prune or time it out by killing it.

A process per trial means nothing a trial allocates can outlive it, and a stuck trial can
always be stopped. Each trial gets its own process group, so killing it takes any helper
processes with it; whatever is still running when the search exits is killed too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from kaon.errors import KaonError
from kaon.tune.worker import PREFIX

_live: set[subprocess.Popen[str]] = set()
_live_lock = threading.Lock()
LOG_TAIL_BYTES = 4096


@dataclass
class Outcome:
    state: str  # complete | pruned | timeout | failed
    value: float | None = None
    epochs: int = 0
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def report_step(epoch: int, epochs: int, max_epochs: int) -> int:
    """Report at the share of its own schedule a trial has done, in units of ``max_epochs``.

    Schedules anneal over each trial's own epoch count, so a 3-epoch trial after epoch 1 is
    compared with a 12-epoch trial after epoch 4 — not after epoch 1, at its highest rate.
    """
    return max(1, round(epoch * max_epochs / max(epochs, 1)))


def run_trial(trial: optuna.Trial, job: dict[str, Any], deadline: Callable[[], float],
              log: Path, prune: bool, report: bool = True, max_epochs: int = 1) -> Outcome:
    """Run ``job`` (see kaon.tune.worker) until it finishes, is pruned, or ``deadline()``.

    ``deadline`` is re-read while the trial runs, so a search whose final retrain turns out to
    need more time can cut running trials earlier. ``report`` sends each epoch's value to
    Optuna (single-objective studies only).
    """
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    epochs = int(job["spec"].get("epochs", 1))
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kaon.tune.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True, bufsize=1, start_new_session=True)
        with _live_lock:
            _live.add(proc)
        timed_out, finished = threading.Event(), threading.Event()

        def watchdog() -> None:
            while not finished.wait(0.25):
                if time.monotonic() >= deadline():
                    timed_out.set()
                    _kill(proc)
                    return

        threading.Thread(target=watchdog, daemon=True).start()
        outcome = Outcome(state="failed")
        code = None
        run_ids: list[str] = []
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(job))
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the worker died at start; its log says why
            for line in proc.stdout:
                if not line.startswith(PREFIX):
                    continue
                try:
                    msg = json.loads(line[len(PREFIX):])
                except ValueError:
                    continue
                if "run" in msg:  # a fit is starting: its run, to tidy once the trial ends
                    run_ids.append(str(msg["run"]))
                    continue
                if outcome.state == "pruned":  # killed; read on to the end for its runs
                    continue
                if msg.get("final"):
                    outcome = Outcome("complete", msg["value"], outcome.epochs, info=msg)
                    continue
                if "epoch" not in msg:  # a later cross-validation fold finished
                    continue
                outcome.epochs, outcome.value = int(msg["epoch"]), float(msg["value"])
                if report:
                    trial.report(outcome.value, report_step(outcome.epochs, epochs, max_epochs))
                    if prune and trial.should_prune():
                        outcome.state = "pruned"
                        _kill(proc)
            code = proc.wait()
        finally:
            finished.set()
            with _live_lock:
                _live.discard(proc)
            if proc.poll() is None:
                _kill(proc)
                proc.wait()
    outcome.seconds = time.monotonic() - started
    if outcome.state == "failed":
        if timed_out.is_set():
            outcome.state = "timeout"
        else:
            tail = _tail(log).strip().splitlines()
            outcome.error = tail[-1] if tail else f"worker exited with {code}"
    _tidy_runs(run_ids, outcome.state, str(job.get("workspace", "default")))
    return outcome


def _tidy_runs(run_ids: list[str], state: str, workspace: str) -> None:
    """A trial is never resumed: drop its runs' checkpoints, and mark the runs a killed trial
    could not close itself."""
    from kaon.train import runs
    from kaon.train.checkpoint import CHECKPOINT

    for run_id in run_ids:
        with contextlib.suppress(KaonError):
            info = runs.get_run(run_id, workspace)
            if info.status == "running":
                runs.set_status(run_id, "interrupted", error=f"tuning trial {state}")
            (info.directory / CHECKPOINT).unlink(missing_ok=True)


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
        return f.read().decode(errors="replace")


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def kill_all() -> None:
    """Stop every running trial process (on Ctrl-C, and at interpreter exit)."""
    with _live_lock:
        for proc in list(_live):
            _kill(proc)


atexit.register(kill_all)
