"""Run one trial in a subprocess: report its epochs to Optuna, prune or time it out by killing it.

A process per trial means nothing a trial allocates can outlive it, and a stuck trial can
always be stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from kaon.tune.worker import PREFIX

_live: set[subprocess.Popen[str]] = set()
_live_lock = threading.Lock()


@dataclass
class Outcome:
    state: str  # complete | pruned | timeout | failed
    value: float | None = None
    epochs: int = 0
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def run_trial(trial: optuna.Trial, job: dict[str, Any], kill_at: float, log: Path,
              prune: bool, report: bool = True) -> Outcome:
    """Run ``job`` (see kaon.tune.worker) until it finishes, is pruned, or ``kill_at``.

    ``report`` sends each epoch's value to Optuna (single-objective studies only).
    """
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kaon.tune.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True, bufsize=1)
        with _live_lock:
            _live.add(proc)
        timed_out = threading.Event()

        def _timeout() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(max(kill_at - time.monotonic(), 0.0), _timeout)
        timer.start()
        outcome = Outcome(state="failed")
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            for line in proc.stdout:
                if not line.startswith(PREFIX):
                    continue
                msg = json.loads(line[len(PREFIX):])
                if msg.get("final"):
                    outcome = Outcome("complete", msg["value"], outcome.epochs, info=msg)
                    continue
                outcome.epochs, outcome.value = int(msg["epoch"]), float(msg["value"])
                if report:
                    trial.report(outcome.value, outcome.epochs)
                if report and prune and trial.should_prune():
                    outcome.state = "pruned"
                    proc.kill()
                    break
            code = proc.wait()
        finally:
            timer.cancel()
            with _live_lock:
                _live.discard(proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outcome.seconds = time.monotonic() - started
    if outcome.state == "failed":
        if timed_out.is_set():
            outcome.state = "timeout"
        else:
            tail = log.read_text()[-2000:].strip().splitlines()
            outcome.error = tail[-1] if tail else f"worker exited with {code}"
    return outcome


def kill_all() -> None:
    """Stop every running trial process (on Ctrl-C or at exit)."""
    with _live_lock:
        for proc in list(_live):
            proc.kill()
