"""One tuning trial, in its own process: ``python -m kaon.tune.worker < trial.json``.

Reads ``{"spec": {...}, "objective": "accuracy"|"auc", "threads": N, "latency": bool,
"folds": K}`` as the first line of stdin (one JSON line), trains without touching the test
split, and prints one ``KAON_TRIAL {...}`` JSON line per epoch (the validation objective) and
a final one. The parent decides pruning and kills us.

With ``folds`` K ≥ 2 the trial is K-fold cross-validated on train + val: the per-epoch lines
come from the first fold (the pruner judges on them), each later fold sends one ``{"fold": j}``
line, and the final value is the mean over the folds. On a small validation split this is what
keeps the search from picking the configuration that was luckiest on a few dozen images.

With ``robust`` true, each fit's value is its objective on perturbed validation images
(kaon.tune.robust), measured once after the fit; the per-epoch lines (the pruner's) stay plain.
The final line then carries ``plain``, the mean of the unperturbed values, for the record.

With ``ends_by`` (a ``time.monotonic()`` instant; the clock is the machine's, shared by its
processes) the fits end by then rather than be killed at the trial's cap: fold j of K by its
share of the time, each shortened as the final retrain is when the epochs left would not fit
(:class:`kaon.train.callbacks.Deadline`). The later folds are planned with the epochs the
first trained (a whole schedule over them, as the retrain's), and are shortened in turn if
they run late. The final line carries the first fold's epochs, ``epochs_trained``. Stdin
stays open after the job: the search sends ``{"ends_by": t}`` lines when the trial's end
moves while it runs (its cut-off moved as trials finished), and each fit then ends by its
share of the new time.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import threading
import time
from typing import IO, Any

import torch

PREFIX = "KAON_TRIAL "


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


class Reporter:
    """After each epoch: the validation objective, on stdout (unless ``quiet``)."""

    def __init__(self, objective: str, quiet: bool = False) -> None:
        self.objective = objective
        self.quiet = quiet
        self.last: float | None = None

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        self.last = validation_objective(trainer, logs, self.objective)
        if not self.quiet:
            emit({"epoch": epoch, "value": self.last, "seconds": logs.get("seconds"),
                  "epochs": trainer.epochs})  # the plan: fewer once shortened to end in time


def validation_objective(trainer: Any, logs: dict[str, float], objective: str) -> float:
    if objective == "accuracy":
        return float(logs["val_accuracy"])
    return objective_on(trainer, trainer.data.x_val, trainer.data.y_val, objective)


def objective_on(trainer: Any, x: torch.Tensor, y: torch.Tensor, objective: str) -> float:
    """The trained model's ``objective`` on images ``x`` with labels ``y``."""
    from kaon.registry.loader import logits_to_proba
    from kaon.train.metrics import roc_auc
    from kaon.train.optim import predictions

    logits = trainer.logits(x)
    if objective == "accuracy":
        return float((predictions(logits).cpu() == y.cpu()).float().mean())
    output = "sigmoid" if logits.shape[1] == 1 else "softmax"
    proba = logits_to_proba(logits, output)
    return roc_auc(y.cpu(), proba[:, 1].cpu())


def robust_objective(trainer: Any, objective: str, seed: int) -> float:
    """The objective on the validation images, each perturbed once (kaon.tune.robust)."""
    from kaon.tune.robust import perturb

    x = perturb(trainer.data.x_val, seed)
    return objective_on(trainer, x, trainer.data.y_val, objective)


def latency_ms(model: torch.nn.Module, shape: tuple[int, ...], repeats: int = 30) -> float:
    """Median single-image inference time on this process's threads."""
    model.eval()
    x = torch.zeros(1, *shape)
    times = []
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


class TrialTime:
    """When the trial ends its fits (``ends_by``), and fold j of K's share of the time:
    ``first + (ends_by - first) * (j + 1) / K``. :meth:`follow` moves ``ends_by`` as the
    search sends new ones; each fit's ``Deadline`` reads its share after every epoch."""

    def __init__(self, ends_by: float, fits: int) -> None:
        self.ends_by, self.fits, self.first = ends_by, fits, time.monotonic()

    def share(self, fold: int) -> float:
        return self.first + (self.ends_by - self.first) * (fold + 1) / self.fits

    def follow(self, stream: IO[str]) -> None:
        """Read ``{"ends_by": t}`` lines from ``stream`` until it closes, in a thread."""
        def read() -> None:
            for line in stream:
                try:
                    self.ends_by = float(json.loads(line)["ends_by"])
                except (ValueError, KeyError, TypeError):
                    continue  # not a move: nothing else is sent after the job

        threading.Thread(target=read, daemon=True).start()


def main() -> int:
    from kaon.procs import exit_when_orphaned

    exit_when_orphaned(75)  # its search died without killing it (kill -9, the OOM killer)
    job = json.loads(sys.stdin.readline())  # then, maybe, moves of its end
    torch.set_num_threads(int(job.get("threads", 1)))
    from kaon.nn.build import count_parameters
    from kaon.nn.spec import parse_spec
    from kaon.train import train
    from kaon.train.callbacks import Deadline
    from kaon.train.runs import new_run_id

    raw, folds = job["spec"], int(job.get("folds") or 0)
    captured: dict[str, Any] = {}

    class Keep:
        def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
            captured["trainer"] = trainer

    robust = bool(job.get("robust"))
    values: list[float] = []
    plain: list[float] = []
    fit_seconds: list[float] = []
    run_id = ""
    fits = max(folds, 1)
    clock = TrialTime(float(job["ends_by"]), fits) if job.get("ends_by") is not None else None
    if clock is not None:
        clock.follow(sys.stdin)
    for fold in range(fits):
        if folds >= 2:
            raw = {**raw, "data": {**raw["data"], "cv_folds": folds, "cv_fold": fold}}
        spec = parse_spec(raw, source="tuning trial")
        reporter = Reporter(job["objective"], quiet=fold > 0)
        callbacks: list[Any] = [reporter, Keep()]
        if clock is not None:  # this fit's share of the trial's time, as it moves
            callbacks.append(Deadline(functools.partial(clock.share, fold)))
        started = time.monotonic()
        announced = new_run_id()
        emit({"run": announced})  # before the run exists: a kill cannot orphan it unannounced
        result = train(spec, callbacks=callbacks, test=False,
                       workspace=job.get("workspace", "default"), run_id=announced)
        fit_seconds.append(time.monotonic() - started)
        if fold == 0:  # the later folds are planned with the epochs the first trained
            raw = {**raw, "epochs": captured["trainer"].epochs}
        assert reporter.last is not None
        plain.append(reporter.last)
        values.append(robust_objective(captured["trainer"], job["objective"], fold)
                      if robust else reporter.last)
        run_id = run_id or result.run_id
        if fold > 0:
            emit({"fold": fold, "value": values[-1]})
    trainer = captured["trainer"]
    final: dict[str, Any] = {"final": True, "value": statistics.fmean(values),
                             "run_id": run_id, "params": count_parameters(trainer.model),
                             "fit_seconds": statistics.fmean(fit_seconds),
                             "epochs_trained": int(raw["epochs"])}
    if folds >= 2:
        final["folds"] = values
    if robust:
        final["plain"] = statistics.fmean(plain)
    if job.get("latency"):
        shape = tuple(trainer.data.x_train.shape[1:])
        final["latency_ms"] = latency_ms(trainer.model.cpu(), shape)
    emit(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
