"""Which finished trial is retrained: one standard error, then robustness (kaon.tune.selection)."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from kaon.tune.selection import choose, standard_error


def trial(number: int, value: float, **attrs: Any) -> optuna.trial.FrozenTrial:
    made = optuna.trial.create_trial(value=value, user_attrs=attrs)
    made.number = number
    return made


def test_cross_validated_trials_within_one_standard_error_go_to_the_most_robust() -> None:
    best = trial(0, 0.9740, folds=[0.970, 0.974, 0.978], robust=0.949)
    tied = trial(1, 0.9738, folds=[0.972, 0.974, 0.976], robust=0.963)
    worse = trial(2, 0.9600, folds=[0.958, 0.960, 0.962], robust=0.990)
    chosen, how = choose([best, tied, worse], "accuracy", 1700)
    assert chosen is tied
    assert how["best_trial"] == 0 and set(how["candidates"]) == {0, 1}
    assert how["standard_error"] == pytest.approx(0.004 / math.sqrt(3), abs=1e-6)


def test_a_clear_best_is_kept_however_robust_the_others_are() -> None:
    best = trial(0, 0.93, robust=0.80)
    other = trial(1, 0.90, robust=0.89)
    # hold-out of 6,000 images: SE = sqrt(0.93 * 0.07 / 6000) = 0.0033
    assert choose([other, best], "accuracy", 6000)[0] is best
    assert standard_error(best, "accuracy", 6000) == pytest.approx(0.003294, abs=1e-5)


def test_trials_without_a_robust_value_rank_by_value_and_auc_holdouts_have_no_band() -> None:
    old = [trial(0, 0.95), trial(1, 0.951), trial(2, 0.949)]
    assert choose(old, "accuracy", 100)[0].number == 1
    auc = [trial(0, 0.990, robust=0.5), trial(1, 0.989, robust=0.9)]
    assert standard_error(auc[0], "auc", 500) == 0.0
    assert choose(auc, "auc", 500)[0].number == 0
