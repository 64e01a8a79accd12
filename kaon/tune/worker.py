"""One tuning trial, in its own process: ``python -m kaon.tune.worker < trial.json``.

Reads ``{"spec": {...}, "objective": "accuracy"|"auc", "threads": N, "latency": bool,
"folds": K}`` on stdin, trains without touching the test split, and prints one
``KAON_TRIAL {...}`` JSON line per epoch (the validation objective) and a final one. The parent
decides pruning and kills us.

With ``folds`` K ≥ 2 the trial is K-fold cross-validated on train + val: the per-epoch lines
come from the first fold (the pruner judges on them), each later fold sends one ``{"fold": j}``
line, and the final value is the mean over the folds. On a small validation split this is what
keeps the search from picking the configuration that was luckiest on a few dozen images.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

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
            emit({"epoch": epoch, "value": self.last, "seconds": logs.get("seconds")})


def validation_objective(trainer: Any, logs: dict[str, float], objective: str) -> float:
    if objective == "accuracy":
        return float(logs["val_accuracy"])
    from kaon.registry.loader import logits_to_proba
    from kaon.train.metrics import roc_auc

    logits = trainer.logits(trainer.data.x_val)
    output = "sigmoid" if logits.shape[1] == 1 else "softmax"
    proba = logits_to_proba(logits, output)
    return roc_auc(trainer.data.y_val.cpu(), proba[:, 1].cpu())


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


def main() -> int:
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(int(job.get("threads", 1)))
    from kaon.nn.build import count_parameters
    from kaon.nn.spec import parse_spec
    from kaon.train import train
    from kaon.train.runs import new_run_id

    raw, folds = job["spec"], int(job.get("folds") or 0)
    captured: dict[str, Any] = {}

    class Keep:
        def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
            captured["trainer"] = trainer

    values: list[float] = []
    fit_seconds: list[float] = []
    run_id = ""
    for fold in range(max(folds, 1)):
        if folds >= 2:
            raw = {**raw, "data": {**raw["data"], "cv_folds": folds, "cv_fold": fold}}
        spec = parse_spec(raw, source="tuning trial")
        reporter = Reporter(job["objective"], quiet=fold > 0)
        started = time.monotonic()
        announced = new_run_id()
        emit({"run": announced})  # before the run exists: a kill cannot orphan it unannounced
        result = train(spec, callbacks=[reporter, Keep()], test=False,
                       workspace=job.get("workspace", "default"), run_id=announced)
        fit_seconds.append(time.monotonic() - started)
        assert reporter.last is not None
        values.append(reporter.last)
        run_id = run_id or result.run_id
        if fold > 0:
            emit({"fold": fold, "value": reporter.last})
    trainer = captured["trainer"]
    final: dict[str, Any] = {"final": True, "value": statistics.fmean(values),
                             "run_id": run_id, "params": count_parameters(trainer.model),
                             "fit_seconds": statistics.fmean(fit_seconds)}
    if folds >= 2:
        final["folds"] = values
    if job.get("latency"):
        shape = tuple(trainer.data.x_train.shape[1:])
        final["latency_ms"] = latency_ms(trainer.model.cpu(), shape)
    emit(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
