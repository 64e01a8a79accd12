"""The search report saved with the tuned model: trials table, best parameters, plots."""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from rich.table import Table

from kaon import jsonsafe
from kaon.jsonsafe import finite

STATE = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
         optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.RUNNING: "running",
         optuna.trial.TrialState.WAITING: "waiting"}


def strict_json(value: Any) -> str:
    """Indented JSON that any parser reads: NaN and infinities become null."""
    return jsonsafe.dumps(value, indent=2)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial. ``value`` is the trial's objective, only for a trial that finished
    (a pruned, timed-out or failed one has none); ``last_epoch_value`` is the last per-epoch
    validation value it reported (what the pruner judged; under cross-validation, of the
    first fold, unperturbed)."""
    rows = []
    max_epochs = _max_epochs(study)
    for t in study.get_trials(deepcopy=False):
        values = list(t.values) if t.values is not None and \
            t.state == optuna.trial.TrialState.COMPLETE else []
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values \
            else None
        rows.append(finite({
            "trial": t.number, "state": trial_state(t),
            "value": values[0] if values else None,
            "last_epoch_value": last,
            "second_objective": values[1] if len(values) > 1 else None,
            "epochs": _epochs(t, max_epochs),
            "seconds": t.user_attrs.get("seconds"), "params": t.params,
            # unperturbed, when scored on perturbed images
            "plain_value": t.user_attrs.get("plain"),
        }))
    return rows


def _max_epochs(study: optuna.Study) -> int | None:
    """The longest schedule of the study's space: what its reported steps are in units of."""
    try:
        return int(study.user_attrs["kaon"]["space"]["epochs"]["high"])
    except (KeyError, TypeError, ValueError):
        return None


def _epochs(trial: optuna.trial.FrozenTrial, max_epochs: int | None) -> int:
    """The epochs a trial trained (of its first fold, under cross-validation): recorded when
    it ended; while it runs, from its last report, whose step is on the longest schedule's
    scale (kaon.tune.runner.report_step), not in its own epochs."""
    if "epochs" in trial.user_attrs:
        return int(trial.user_attrs["epochs"])
    if not trial.intermediate_values:
        return 0
    step, planned = max(trial.intermediate_values), trial.params.get("epochs")
    if max_epochs and isinstance(planned, int):
        return min(planned, max(1, round(step * planned / max_epochs)))
    return step


def trial_state(trial: optuna.trial.FrozenTrial) -> str:
    """complete, pruned, timeout, failed (or running, waiting): what the search recorded,
    else Optuna's state (a trial marked failed on --resume, say)."""
    return str(trial.user_attrs.get("outcome", STATE.get(trial.state, "?")))


def trials_table(study: optuna.Study, objective: str, limit: int = 25) -> Table:
    """The live table the CLI shows: newest trials last, best value marked."""
    rows = trial_rows(study)
    best = max((r["value"] for r in rows if r["state"] == "complete" and r["value"] is not None),
               default=None)
    table = Table(title=f"{study.study_name}: {len(rows)} trials", expand=False)
    for col in ("#", "state", "family", "optimizer", "lr", "batch", "epochs", objective, "s"):
        table.add_column(col, justify="right" if col not in ("state", "family",
                                                             "optimizer") else "left")
    for r in rows[-limit:]:
        p = r["params"]
        lr = p.get("adam_lr", p.get("sgd_lr"))
        value = _value_cell(r, best)
        table.add_row(str(r["trial"]), r["state"], str(p.get("family", "")),
                      str(p.get("optimizer", "")), f"{lr:.2g}" if lr else "",
                      str(p.get("batch_size", "")), str(r["epochs"]), value,
                      f"{r['seconds']:.0f}" if r["seconds"] else "")
    return table


CSV_COLUMNS = ("trial", "state", "value", "last_epoch_value", "second_objective", "epochs",
               "seconds", "params", "plain_value")


def _value_cell(row: dict[str, Any], best: float | None) -> str:
    """The live table's objective: a finished trial's value (the best in green), else the
    last per-epoch value a running or stopped trial reported, dimmed."""
    if row["value"] is not None:
        text = f"{row['value']:.4f}"
        return f"[bold green]{text}[/]" if row["value"] == best else text
    last = row["last_epoch_value"]
    return "" if last is None or row["state"] == "failed" else f"[dim]{last:.4f}[/]"


def write_report(study: optuna.Study, folder: Path, summary: dict[str, Any],
                 targets: list[str] | None = None) -> dict[str, Path]:
    """trials.csv, trials.json, best.json and PNG plots; returns what was written.
    ``targets``: the objectives' names for the plots' axes (e.g. validation accuracy,
    latency ms). Every JSON file is strict: NaN and infinities are null."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    files = {"trials_csv": folder / "trials.csv", "trials_json": folder / "trials.json",
             "best": folder / "best.json"}
    with files["trials_csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([json.dumps(r[c]) if c == "params" else r[c] for c in CSV_COLUMNS])
    files["trials_json"].write_text(strict_json(rows))
    files["best"].write_text(strict_json(summary))
    logging.getLogger("optuna").setLevel(logging.ERROR)
    vm = optuna.visualization.matplotlib
    multi = len(study.directions) > 1
    names = targets or ["objective", "second objective"][:len(study.directions)]
    first: dict[str, Any] = {"target_name": names[0]}
    if multi:
        first["target"] = lambda t: t.values[0]
    plots: list[tuple[str, Any]] = [
        ("optimization_history", lambda: vm.plot_optimization_history(study, **first)),
        ("param_importances", lambda: vm.plot_param_importances(study, **first)),
    ]
    if multi:
        plots.append(("pareto_front", lambda: vm.plot_pareto_front(study, target_names=names)))
    for name, draw in plots:
        try:
            with warnings.catch_warnings():  # Optuna's "experimental" and "few trials" notes
                warnings.simplefilter("ignore")
                ax = draw()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances need two completed trials
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files[name] = path
    return files
