"""Run one trial in a subprocess: report its epochs to Optuna, prune or time it out by killing it.

A process per trial means nothing a trial allocates can outlive it, and a stuck trial can
always be stopped. Each trial gets its own process group, so killing it takes any helper
processes with it; whatever is still running when the search exits is killed too, and a
trial whose search died without a word (``kill -9``, the OOM killer) exits within a second
(:func:`kaon.procs.exit_when_orphaned`). On a machine
with several GPUs each running trial sees one of its own (``CUDA_VISIBLE_DEVICES``, from
:class:`GpuSlots`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from kaon.errors import KaonError
from kaon.tune.worker import PREFIX

_live: set[subprocess.Popen[str]] = set()
_live_lock = threading.Lock()
LOG_TAIL_BYTES = 4096
WORKER: tuple[str, ...] = ("-m", "kaon.tune.worker")  # after the interpreter


class GpuSlots:
    """Hands each running trial a GPU: the one with the fewest trials on it, round-robin among
    ties, so N trials on N GPUs get one each. With fewer than two GPUs there is nothing to
    choose and trials inherit the environment as it is."""

    def __init__(self, count: int, visible: str | None = None) -> None:
        """``count``: the GPUs PyTorch sees; ``visible``: the ``CUDA_VISIBLE_DEVICES`` they
        were picked by (a trial gets that list's entry, not the bare index)."""
        listed = [v.strip() for v in (visible or "").split(",") if v.strip()]
        self.ids = listed[:count] if listed else [str(i) for i in range(count)]
        self.busy = [0] * len(self.ids)
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self) -> int | None:
        """The index of the GPU the next trial runs on (None: no choice to make)."""
        if len(self.ids) < 2:
            return None
        with self._lock:
            n = len(self.ids)
            index = min(((self._next + k) % n for k in range(n)), key=lambda i: self.busy[i])
            self.busy[index] += 1
            self._next = (index + 1) % n
            return index

    def release(self, index: int | None) -> None:
        if index is not None:
            with self._lock:
                self.busy[index] -= 1

    def env(self, index: int | None) -> dict[str, str] | None:
        """The variables a trial on GPU ``index`` runs with (None: inherit them all)."""
        return None if index is None else {"CUDA_VISIBLE_DEVICES": self.ids[index]}

    @contextlib.contextmanager
    def slot(self) -> Iterator[dict[str, str] | None]:
        """A GPU for one trial, given back when it ends: ``with slots.slot() as env``."""
        index = self.acquire()
        try:
            yield self.env(index)
        finally:
            self.release(index)


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
              log: Path, prune: bool, report: bool = True, max_epochs: int = 1,
              env: dict[str, str] | None = None,
              lock: contextlib.AbstractContextManager[Any] | None = None,
              ends_by: Callable[[], float] | None = None) -> Outcome:
    """Run ``job`` (see kaon.tune.worker) until it finishes, is pruned, or ``deadline()``.

    ``deadline`` is re-read while the trial runs, so a search whose final retrain turns out to
    need more time can cut running trials earlier. ``report`` sends each epoch's value to
    Optuna (single-objective studies only). ``env``: variables set for the trial process on
    top of this one's (its GPU). ``lock``: held while the epoch is reported and the pruner
    asked (the search's; Optuna's pruners are not thread-safe: Hyperband sets up its
    brackets on the first call, and two at once doubled them).

    ``ends_by``: when the trial should end its fits (the job's ``ends_by`` at launch), re-read
    with ``deadline``; a move of a second or more is sent to the worker on its stdin, so a
    trial whose search's cut-off moved earlier ends by the new time, shortened and scored,
    rather than be killed at it with nothing.
    """
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    epochs = int(job["spec"].get("epochs", 1))
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, *WORKER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                                start_new_session=True,
                                env={**os.environ, **env} if env else None)
        with _live_lock:
            _live.add(proc)
        timed_out, finished = threading.Event(), threading.Event()
        pipe = threading.Lock()  # the job, then moves of its end; closed once it has ended
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        def send(payload: dict[str, Any]) -> None:
            with pipe, contextlib.suppress(OSError, ValueError):  # it died, or has ended
                stdin.write(json.dumps(payload) + "\n")
                stdin.flush()

        job_sent = threading.Event()  # moves of its end only after the job

        def watchdog() -> None:
            sent = job.get("ends_by")
            while not finished.wait(0.25):
                if time.monotonic() >= deadline():
                    timed_out.set()
                    _kill(proc)
                    return
                if ends_by is None or sent is None or not job_sent.is_set():
                    continue
                now_ends = ends_by()
                if abs(now_ends - sent) >= 1.0:
                    send({"ends_by": now_ends})
                    sent = now_ends

        threading.Thread(target=watchdog, daemon=True).start()
        outcome = Outcome(state="failed")
        code = None
        run_ids: list[str] = []
        try:
            send(job)  # (a worker that died at start: its log says why)
            job_sent.set()
            for line in proc.stdout:
                if not line.startswith(PREFIX):
                    continue
                try:
                    msg = json.loads(line[len(PREFIX):])
                except ValueError:
                    continue
                if "run" in msg:  # a fit is starting: its run, to tidy once the trial ends
                    run_ids.append(str(msg["run"]))
                    with lock or contextlib.nullcontext():  # and on --resume, had we died
                        trial.set_user_attr("runs", list(run_ids))
                    continue
                if outcome.state == "pruned":  # killed; read on to the end for its runs
                    continue
                if msg.get("final"):
                    outcome = Outcome("complete", msg["value"], outcome.epochs, info=msg)
                    continue
                if "epoch" not in msg:  # a later cross-validation fold finished
                    continue
                outcome.epochs, outcome.value = int(msg["epoch"]), float(msg["value"])
                # on the scale of its plan as it now stands: a trial shortened to end in time
                # reports its last, annealed epoch at the end of the scale, not mid-way
                planned = int(msg.get("epochs", epochs))
                if report and math.isfinite(outcome.value):  # (Optuna prunes on a NaN)
                    with lock or contextlib.nullcontext():
                        trial.report(outcome.value,
                                     report_step(outcome.epochs, planned, max_epochs))
                        # asked even when the answer is not acted on (the portfolio's
                        # trials): Hyperband records a trial at a rung only when asked, and
                        # the rungs that other trials are judged against must hold it
                        stop = trial.should_prune()
                    if stop and prune:
                        outcome.state = "pruned"
                        _kill(proc)
            code = proc.wait()
        finally:
            finished.set()
            with pipe, contextlib.suppress(OSError):
                stdin.close()
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
    tidy_runs(run_ids, outcome.state, str(job.get("workspace", "default")))
    return outcome


def tidy_runs(run_ids: list[str], state: str, workspace: str) -> None:
    """A trial is never resumed: drop its runs' checkpoints, and mark the runs a killed trial
    could not close itself (``state``: why, e.g. ``pruned``). Called when a trial ends, and
    for the trials a stopped search leaves running (its runs are the trial's ``runs``)."""
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
