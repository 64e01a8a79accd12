"""One tuning trial, in its own process: ``python -m kaon.tune.worker < trial.json``.

Reads ``{"spec": {...}, "objective": "accuracy"|"auc", "threads": N, "latency": bool}`` on
stdin, trains without touching the test split, and prints one ``KAON_TRIAL {...}`` JSON line per
epoch (the validation objective) and a final one. The parent decides pruning and kills us.
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
    """After each epoch: the validation objective, on stdout."""

    def __init__(self, objective: str) -> None:
        self.objective = objective
        self.last: float | None = None

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        self.last = validation_objective(trainer, logs, self.objective)
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

    spec = parse_spec(job["spec"], source="tuning trial")
    reporter = Reporter(job["objective"])
    captured: dict[str, Any] = {}

    class Keep:
        def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
            captured["trainer"] = trainer

    result = train(spec, callbacks=[reporter, Keep()], test=False,
                   workspace=job.get("workspace", "default"))
    trainer = captured["trainer"]
    final: dict[str, Any] = {"final": True, "value": reporter.last, "run_id": result.run_id,
                             "params": count_parameters(trainer.model)}
    if job.get("latency"):
        shape = tuple(trainer.data.x_train.shape[1:])
        final["latency_ms"] = latency_ms(trainer.model.cpu(), shape)
    emit(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
