"""The search report: strict JSON, one name per column, values only where a trial has one."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from kaon.tune.report import trial_rows, write_report

FAILED, TIMEOUT = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED


def strict(text: str) -> Any:
    """Parse as a strict parser (a browser's JSON.parse) does: NaN and Infinity refused."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def stopped_trial(study: optuna.Study, state: optuna.trial.TrialState, outcome: str | None,
                  last: float) -> None:
    """A trial that reported two epochs, then stopped with ``state`` (``outcome``: what the
    search recorded; None as for a trial marked failed on --resume)."""
    trial = study.ask()
    trial.suggest_categorical("family", ["mlp"])
    trial.report(0.5, 1)
    trial.report(last, 2)
    if outcome is not None:
        trial.set_user_attr("outcome", outcome)
    study.tell(trial, state=state)


def searched() -> optuna.Study:
    """Trial 0 finished (0.8, plain value NaN), 1 timed out at 0.7, 2 failed after 0.6, and
    3 was running when the search was killed (failed on --resume, no outcome of its own)."""
    study = optuna.create_study(direction="maximize")
    first = study.ask()
    first.suggest_categorical("family", ["mlp"])
    first.set_user_attr("outcome", "complete")
    first.set_user_attr("plain", math.nan)
    study.tell(first, 0.8)
    stopped_trial(study, TIMEOUT, "timeout", 0.7)
    stopped_trial(study, FAILED, "failed", 0.6)
    stopped_trial(study, FAILED, None, 0.65)
    return study


def test_best_and_trials_json_are_strict_json(tmp_path: Path) -> None:
    summary = {"test": {"accuracy": 0.0, "roc_auc": math.nan}, "latency": math.inf}
    files = write_report(searched(), tmp_path, summary)
    best = strict(files["best"].read_text())
    assert best["test"] == {"accuracy": 0.0, "roc_auc": None} and best["latency"] is None
    rows = strict(files["trials_json"].read_text())
    assert rows[0]["plain_value"] is None


def test_only_a_finished_trial_has_a_value_the_others_their_last_epoch_s() -> None:
    rows = trial_rows(searched())
    assert [(r["state"], r["value"], r["last_epoch_value"]) for r in rows] == [
        ("complete", 0.8, None), ("timeout", None, 0.7), ("failed", None, 0.6),
        ("failed", None, 0.65)]


def test_trials_csv_and_json_name_their_columns_alike(tmp_path: Path) -> None:
    files = write_report(searched(), tmp_path, {})
    with files["trials_csv"].open() as f:
        header = next(csv.reader(f))
    assert "plain_value" in header and "last_epoch_value" in header
    assert list(strict(files["trials_json"].read_text())[0]) == header


def test_the_pareto_front_plot_names_its_axes(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    labels: list[tuple[str, str]] = []
    draw = optuna.visualization.matplotlib.plot_pareto_front

    def recorded(*args: Any, **kwargs: Any) -> Any:
        ax = draw(*args, **kwargs)
        labels.append((ax.get_xlabel(), ax.get_ylabel()))
        return ax

    monkeypatch.setattr(optuna.visualization.matplotlib, "plot_pareto_front", recorded)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, latency in ((0.9, 3.0), (0.8, 1.0)):
        trial = study.ask()
        trial.suggest_float("dropout", 0.0, 0.5)
        study.tell(trial, [accuracy, latency])
    files = write_report(study, tmp_path, {}, ["validation accuracy", "latency ms"])
    assert files["pareto_front"].is_file()
    assert labels == [("validation accuracy", "latency ms")]



def test_the_epochs_column_counts_a_trial_s_own_epochs_not_the_pruner_s_steps() -> None:
    """Steps are on the longest schedule's scale (18 of 72 epochs done reports step 72): the
    column showed 72 for an 18-epoch trial, and 0 in multi-objective searches."""
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("kaon", {"space": {"epochs": {"low": 18, "high": 72}}})
    running = study.ask()
    running.suggest_int("epochs", 18, 72)  # 18 (the low end, on a fixed trial below)
    ended = study.ask()
    ended.suggest_int("epochs", 18, 72)
    ended.report(0.9, 72)  # its last of 18 epochs, on the 72-epoch scale
    ended.set_user_attr("epochs", 18)
    study.tell(ended, 0.9)
    half = study.ask(fixed_distributions={"epochs": optuna.distributions.IntDistribution(18, 72)})
    half.report(0.5, 36)  # a running trial of its own planned epochs, halfway
    rows = {r["trial"]: r for r in trial_rows(study)}
    assert rows[1]["epochs"] == 18
    planned = half.params["epochs"]
    assert rows[2]["epochs"] == min(planned, round(36 * planned / 72))
    assert rows[0]["epochs"] == 0  # nothing reported yet
