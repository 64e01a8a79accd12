"""Budget arithmetic for ``kaon tune``: plain functions over plain numbers.

The wall-clock budget covers the search *and* the final retrain on train + validation, so the
search stops launching and cuts running trials early enough for the retrain to fit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from kaon.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600}
STARTUP_SECONDS = 10.0  # a trial process: interpreter, torch (+dynamo) import, dataset load
FINISH_SECONDS = 5.0  # test evaluation, plots, registration after the retrain
EPOCH_OVERHEAD = 1.2  # an epoch against its bare training steps: batching, augmentation, logs
TRIAL_SHARE = 0.4  # of the budget, the default cap of one trial
# ... of a cross-validated one, which is several fits: room for the portfolio's ResNet to
# finish its schedule on PneumoniaMNIST's three folds in a 10-minute budget (12 epochs took
# 331 s of the 360; with 240 it had 5 epochs, too few to stand out, decision 0020)
TRIAL_SHARE_CV = 0.6
# of the budget, at most kept for a retrain that trains the best trial longer than it did
# (its time cut its epochs short, decision 0032): on Fashion-MNIST the portfolio's CNN fits 4
# epochs in a trial's share of 2 cores (0.9247 on test), and 8 tested 0.9313
RETRAIN_SHARE = 0.5
# each later fold of a cross-validated trial: its data, model and run (a whole one-epoch MLP
# fit of a later fold took 0.05 s on BreastMNIST, 0.2 s on PneumoniaMNIST)
FOLD_SETUP_SECONDS = 0.5


# of a trial's time, kept after its last fit for scoring, the final report and the exit
TRIAL_END_MARGIN = 0.03


_PART = r"(\d+(?:\.\d+)?)\s*([smh])"


def parse_duration(text: str, flag: str = "--time") -> float:
    """``90s``, ``10m``, ``1.5h``, ``1h30m``, ``2m30s`` or plain seconds → seconds."""
    plain = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*", text)
    if plain:
        return float(plain[1])
    parts = re.findall(_PART, text)
    units = [unit for _, unit in parts]
    if not re.fullmatch(rf"\s*(?:{_PART}\s*)+", text) or len(set(units)) != len(units) \
            or units != sorted(units, key="hms".index):
        raise ConfigError(f"{flag} {text!r} is not a duration.",
                          hint="Use e.g. 90s, 10m, 1h or 1h30m.")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


@dataclass(frozen=True)
class Budget:
    """Times are on the ``time.monotonic()`` clock."""

    start: float
    total: float

    @property
    def deadline(self) -> float:
        return self.start + self.total

    def search_cutoff(self, retrain_estimate: float) -> float:
        """When running trials must stop so that the retrain still fits."""
        return self.deadline - retrain_estimate - FINISH_SECONDS

    def may_launch(self, now: float, retrain_estimate: float, min_trial: float) -> bool:
        return now + min_trial <= self.search_cutoff(retrain_estimate)


def trial_ends_by(kill_at: float, launched: float) -> float:
    """When a trial launched at ``launched`` should end its fits to finish before it is
    killed at ``kill_at`` (its cap, the search's cut-off or its own): a margin of
    ``TRIAL_END_MARGIN`` of its time, at least a second, before."""
    return kill_at - max(1.0, TRIAL_END_MARGIN * (kill_at - launched))


def one_fit(trial_seconds: float, folds: int) -> float:
    """The seconds of one fit in a trial of ``trial_seconds`` that made ``folds`` fits (one
    start-up between them): what a retrain is scaled from."""
    return STARTUP_SECONDS + max(trial_seconds - STARTUP_SECONDS, 0.0) / max(folds, 1)


def retrain_seconds(trial_seconds: float, n_train: int, n_val: int,
                    speedup: float = 1.0) -> float:
    """The final fit at a trial's epochs: one fit of the trial (``trial_seconds``, start-up
    included), divided by ``speedup``, how much faster the retrain's threads (all cores) run
    this model than a trial's did, and scaled from the trial's epoch (training steps on
    ``n_train`` images, a validation pass over ``n_val``, :func:`epoch_seconds`) to the
    retrain's (steps on both, no validation)."""
    return (max(trial_seconds - STARTUP_SECONDS, 1.0) / max(speedup, 1.0)
            * (n_train + n_val) / max(n_train + n_val / 3, 1))


def retrain_estimate(trial_seconds: float, n_train: int, n_val: int,
                     speedup: float = 1.0) -> float:
    """What the search keeps for the final fit at the trial's epochs: :func:`retrain_seconds`
    and a 10% margin."""
    return retrain_seconds(trial_seconds, n_train, n_val, speedup) * 1.1


def retrain_per_trial_second(n_train: int, n_val: int, folds: int, speedup: float) -> float:
    """The seconds of retrain each second of a trial's fitting stands for: it made ``folds``
    fits (the retrain makes one) at a trial's pace (the retrain's is ``speedup`` times
    faster), :func:`retrain_estimate` of one fit."""
    return retrain_estimate(STARTUP_SECONDS + 1.0, n_train, n_val, speedup) / max(folds, 1)


def own_cutoff(launched: float, deadline: float, per_second: float) -> float:
    """The latest a trial launched at ``launched`` may end for its own retrain to fit before
    ``deadline`` (less ``FINISH_SECONDS``), should it finish as the best: a trial of ``D``
    seconds is counted as ``D`` of fitting (its start-up is not taken off: part of it, the
    data load, is in the fits it reports), which the retrain repeats at ``per_second``
    (:func:`retrain_per_trial_second`), so ``launched + D * (1 + per_second)`` must not pass
    it."""
    return launched + (deadline - FINISH_SECONDS - launched) / (1 + per_second)


def measured_speedup(fit_seconds: float, epochs: int, all_cores: float, n_train: int,
                     n_val: int) -> float:
    """How much faster the retrain runs a model than a trial did, from the trial's real fit
    (``fit_seconds`` for ``epochs``, another trial sharing the cores) against one of its
    epochs at ``all_cores``, the model's seconds per image timed on all cores, alone."""
    alone = epoch_seconds(all_cores, n_train, n_val) * max(epochs, 1)
    return fit_seconds / max(alone, 1e-9)


def clamp_speedup(speedup: float, most: float) -> float:
    """A retrain speed-up as the search keeps it: at least 1 (the retrain is never budgeted
    slower than a trial), at most ``most``, to 3 decimals."""
    return round(max(1.0, min(speedup, most)), 3)


def epoch_seconds(seconds_per_image: float, n_train: int, n_val: int) -> float:
    """One epoch: training steps on ``n_train`` images, plus validation (a forward pass, about
    a third of a step) on ``n_val``, plus overhead."""
    return seconds_per_image * (n_train + n_val / 3) * EPOCH_OVERHEAD


def fixed_seconds(seconds_per_image: float, n_val: int, folds: int, robust: bool) -> float:
    """What a trial costs besides its epochs: the process, each later fold's setup and, when
    trials are scored on perturbed images, one more forward pass over each fit's validation
    images (a third of a training step per image)."""
    fits = max(folds, 1)
    passes = seconds_per_image * n_val / 3 * fits if robust else 0.0
    return STARTUP_SECONDS + FOLD_SETUP_SECONDS * (fits - 1) + passes


def fitted_epochs(seconds_per_image: float, n_train: int, n_val: int, folds: int,
                  cap: float, low: int, high: int, robust: bool = False) -> int | None:
    """The most epochs (at most ``high``) a trial of this cost finishes within ``cap``
    seconds, validation, every fold, its setup and the perturbed passes included; None when
    not even ``low`` fit."""
    per_epoch = epoch_seconds(seconds_per_image, n_train, n_val) * max(folds, 1)
    usable = cap - fixed_seconds(seconds_per_image, n_val, folds, robust)
    epochs = int(usable / max(per_epoch, 1e-9))
    return min(epochs, high) if epochs >= low else None


def format_duration(seconds: float) -> str:
    """Seconds as a ``--time`` value: ``5m``, ``2h``, ``90s``, ``1.5s``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:.3g}s" if seconds < 10 else f"{seconds:.0f}s"


def minutes_for(seconds: float) -> str:
    """A ``--time`` of whole minutes, at least one, that holds ``seconds``."""
    return f"{max(1, math.ceil(seconds / 60))}m"


def check_feasible(left: float, min_trial: float, n_train: int, n_val: int,
                   cap: float | None = None, folds: int = 0, total: float | None = None,
                   trial_time: bool = False, portfolio_timed: bool = False) -> None:
    """Refuse, before any trial, a budget that cannot hold one trial plus its retrain.

    ``left`` is what remains of the budget ``total`` (``--time``) after the checks
    themselves. The retrain is estimated from the trial cap ``cap`` (``trial_time``: given as
    ``--trial-time``), as the search does until a trial has finished (a smaller estimate
    here let budgets through in which the search then could not launch one trial); the
    cheapest trial gets a margin of 1.5x, and the finish and the timing of the portfolio's
    models a second ``FINISH_SECONDS`` (none once ``portfolio_timed``: the search checks
    again after the timing, with what it took spent). A cross-validated trial is ``folds``
    fits, the retrain one. The error states the budget and what is needed, never a negative
    time.
    """
    retrain = retrain_estimate(one_fit(max(cap or min_trial, min_trial), folds), n_train, n_val)
    needed = 1.5 * min_trial + retrain + (1 if portfolio_timed else 2) * FINISH_SECONDS
    if left >= needed:
        return
    checks = max(total - left, 0.0) if total is not None else 0.0
    budget = (f"A --time of {format_duration(total)}" if total is not None
              else f"A budget with {max(left, 0.0):.0f}s left after the checks")
    spent = (f"; the checks before the search took {checks:.0f}s of it"
             if checks >= 1 else "")
    lower = (", or a shorter --trial-time (the retrain is budgeted from it until a trial "
             "finishes)" if trial_time else "")
    raise ConfigError(
        f"{budget} is too small: the cheapest trial on this dataset needs about "
        f"{min_trial:.0f}s, plus a final retrain and evaluation ({needed:.0f}s with "
        f"margin{spent}).",
        hint=f"Give --time {minutes_for(1.5 * (needed + checks))} or more{lower}.")
