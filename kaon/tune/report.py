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

STATE = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
         optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.RUNNING: "running",
         optuna.trial.TrialState.WAITING: "waiting"}


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values if t.values is not None else (
            [t.intermediate_values[max(t.intermediate_values)]] if t.intermediate_values else [])
        rows.append({
            "trial": t.number, "state": t.user_attrs.get("outcome", STATE.get(t.state, "?")),
            "value": values[0] if values else None,
            "second_objective": values[1] if len(values) > 1 else None,
            "epochs": max(t.intermediate_values) if t.intermediate_values else 0,
            "seconds": t.user_attrs.get("seconds"), "params": t.params,
            "plain": t.user_attrs.get("plain"),  # unperturbed, when scored on perturbed images
        })
    return rows


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
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        if best is not None and r["value"] == best and r["state"] == "complete":
            value = f"[bold green]{value}[/]"
        table.add_row(str(r["trial"]), r["state"], str(p.get("family", "")),
                      str(p.get("optimizer", "")), f"{lr:.2g}" if lr else "",
                      str(p.get("batch_size", "")), str(r["epochs"]), value,
                      f"{r['seconds']:.0f}" if r["seconds"] else "")
    return table


def write_report(study: optuna.Study, folder: Path, summary: dict[str, Any]) -> dict[str, Path]:
    """trials.csv, trials.json, best.json and PNG plots; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    files = {"trials_csv": folder / "trials.csv", "trials_json": folder / "trials.json",
             "best": folder / "best.json"}
    with files["trials_csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", "value", "second_objective", "epochs", "seconds",
                         "params", "plain_value"])
        for r in rows:
            writer.writerow([r["trial"], r["state"], r["value"], r["second_objective"],
                             r["epochs"], r["seconds"], json.dumps(r["params"]), r["plain"]])
    files["trials_json"].write_text(json.dumps(rows, indent=2))
    files["best"].write_text(json.dumps(summary, indent=2, default=str))
    logging.getLogger("optuna").setLevel(logging.ERROR)
    vm = optuna.visualization.matplotlib
    multi = len(study.directions) > 1
    first: dict[str, Any] = ({"target": lambda t: t.values[0], "target_name": "objective"}
                             if multi else {})
    plots: list[tuple[str, Any]] = [
        ("optimization_history", lambda: vm.plot_optimization_history(study, **first)),
        ("param_importances", lambda: vm.plot_param_importances(study, **first)),
    ]
    if multi:
        plots.append(("pareto_front", lambda: vm.plot_pareto_front(study)))
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
