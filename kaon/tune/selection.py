"""Which finished trial becomes the model: the one-standard-error rule, then robustness.

A search ends with dozens of trials whose validation values differ by less than validation can
resolve. Taking the single highest value then picks whichever was luckiest. Instead the trials
within one standard error of the best are candidates, and the one that keeps the most accuracy
on perturbed validation images wins (kaon.tune.robust; docs/decisions/0018).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import optuna


def standard_error(trial: optuna.trial.FrozenTrial, objective: str, n_val: int) -> float:
    """The standard error of a trial's validation value: from its folds' spread under
    cross-validation, else (accuracy on a hold-out of ``n_val`` images) the binomial one;
    0 when neither applies (AUC on a hold-out)."""
    folds = trial.user_attrs.get("folds") or []
    if len(folds) >= 2:
        return statistics.stdev(folds) / math.sqrt(len(folds))
    if objective == "accuracy" and n_val > 0:
        value = float(trial.values[0])
        return math.sqrt(max(value * (1 - value), 0.0) / n_val)
    return 0.0


def choose(complete: list[optuna.trial.FrozenTrial], objective: str,
           n_val: int) -> tuple[optuna.trial.FrozenTrial, dict[str, Any]]:
    """The finished trial to retrain, and how it was chosen (decision 0018).

    Validation cannot tell apart trials within one standard error of the best (the
    one-standard-error rule of Breiman et al., ESL 7.10); among those, the one that keeps the
    most accuracy on perturbed validation images (``robust``, kaon.tune.robust) is chosen.
    Trials without a ``robust`` value (older studies) rank by their value alone."""
    best = max(complete, key=lambda t: (t.values[0], -t.number))
    band = standard_error(best, objective, n_val)
    near = [t for t in complete if t.values[0] >= best.values[0] - band]
    chosen = max(near, key=lambda t: (t.user_attrs.get("robust", -1.0), t.values[0],
                                      -t.number))
    return chosen, {
        "rule": "within one standard error of the best value, the most accurate on "
                "perturbed validation images",
        "best_trial": best.number, "standard_error": round(band, 6),
        "candidates": {t.number: {"value": t.values[0], "robust": t.user_attrs.get("robust")}
                       for t in near}}
