"""``kaon tune``: search architectures and hyperparameters under a time budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from kaon.cli.data import parse_size
from kaon.cli.output import console, console_err, print_json
from kaon.errors import ConfigError

if TYPE_CHECKING:
    from kaon.tune.study import TuneResult


def tune(
    data: str | None = typer.Option(
        None, "--data", help="Dataset name (catalog or imported), or the path of an image "
                             "folder, .npz or .csv to import first."),
    size: str | None = typer.Option(
        None, "--size", help="With --data PATH: resize folder images to HEIGHTxWIDTH."),
    time_: str | None = typer.Option(
        None, "--time", help="Wall-clock budget incl. the final retrain, e.g. 90s, 10m or "
                             "1h30m [default: 10m]."),
    objective: str | None = typer.Option(
        None, "--objective", help="accuracy (the default) or auc."),
    multi_objective: str | None = typer.Option(
        None, "--multi-objective", help="Also minimise latency or params (Pareto front)."),
    workers: int | None = typer.Option(
        None, "--workers", help="Parallel trials (default: GPUs, else cores)."),
    trial_time: str | None = typer.Option(None, "--trial-time", help="Cap per trial, e.g. 2m."),
    space: Path | None = typer.Option(None, "--space", help="YAML overriding the search space."),
    name: str | None = typer.Option(
        None, "--name", help="Model name (default DATA-tuned; with --pick N, DATA-tuned-tN)."),
    sampler: str | None = typer.Option(None, "--sampler", help="tpe (the default) or random."),
    cv: int | None = typer.Option(
        None, "--cv", help="Cross-validate each trial on K folds of train + val (0: off; "
                           "default: 3 when the validation split has under 1,000 images)."),
    robust: bool | None = typer.Option(
        None, "--robust/--no-robust",
        help="Score trials on perturbed validation images: shifted, zoomed, re-exposed "
             "(default: on when trials are cross-validated)."),
    warm_start: bool | None = typer.Option(
        None, "--warm-start/--no-warm-start",
        help="Try a portfolio of known-good configurations before the sampler's own "
             "(the default)."),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the sampler and of every trial (default 0)."),
    resume: str | None = typer.Option(None, "--resume", help="Continue a killed study."),
    pick: int | None = typer.Option(
        None, "--pick", help="With --resume STUDY: retrain this finished trial (e.g. a smaller "
                             "point of the Pareto front) and register it."),
    json_: bool = typer.Option(False, "--json", help="Print a JSON summary as the last line."),
) -> None:
    """Find a good architecture and hyperparameters for a dataset, retrain, register.

    Examples:

        kaon tune --data breastmnist --time 5m

        kaon tune --data pneumoniamnist --time 10m --objective auc --json

        kaon tune --data fashion-mnist --time 15m --multi-objective latency

        kaon tune --data ./my-xrays --size 64x64 --time 30m --cv 5

        kaon tune --data fashion-mnist --time 15m --robust

        kaon tune --resume tune-3f9c1a2b

        kaon tune --resume tune-3f9c1a2b --pick 7
    """
    from kaon.tune import TuneConfig, dataset_for, load_space
    from kaon.tune import pick as pick_trial
    from kaon.tune import resume as resume_study
    from kaon.tune import tune as run_tune
    from kaon.tune.budget import parse_duration

    if pick is not None and not resume:
        raise ConfigError("--pick needs the study: --resume STUDY --pick TRIAL.",
                          hint="Example: kaon tune --resume tune-3f9c1a2b --pick 7")
    if resume:  # the study keeps the settings it was started with: say so, do not ignore them
        given = [flag for flag, value in (
            ("--data", data), ("--size", size), ("--time", time_), ("--workers", workers),
            ("--trial-time", trial_time), ("--space", space), ("--cv", cv),
            ("--robust/--no-robust", robust), ("--multi-objective", multi_objective),
            ("--objective", objective), ("--sampler", sampler), ("--seed", seed),
            ("--warm-start/--no-warm-start", warm_start)) if value is not None]
        if pick is None and name is not None:
            given.append("--name")
        if given:
            raise ConfigError(f"--resume continues {resume} with the settings it was started "
                              f"with; {', '.join(given)} cannot change them.",
                              hint=f"Run `kaon tune --resume {resume}` alone, or start a new "
                                   "search.")
    _stop_on_sigterm()
    if resume and pick is not None:
        result = pick_trial(resume, pick, name=name, progress=not json_)
    elif resume:
        result = resume_study(resume, progress=not json_)
    else:
        if not data:
            raise ConfigError("Give --data NAME or PATH (or --resume STUDY).",
                              hint="Example: kaon tune --data breastmnist --time 5m")
        choice = dataset_for(data, parse_size(size) if size else None)
        fields = {"dataset": choice.name, "time_seconds": parse_duration(time_ or "10m"),
                  "objective": objective or "accuracy", "multi_objective": multi_objective,
                  "seed": 0 if seed is None else seed, "model_name": name,
                  "sampler": sampler or "tpe", "space": load_space(space),
                  "warm_start": True if warm_start is None else warm_start}
        if workers is not None:
            fields["workers"] = workers
        if trial_time:
            fields["trial_seconds"] = parse_duration(trial_time, "--trial-time")
        if cv is not None:
            fields["cv_folds"] = cv
        if robust is not None:
            fields["robust"] = robust
        try:
            cfg = TuneConfig.model_validate(fields)
        except ValidationError as exc:
            raise ConfigError(f"Invalid tune options: {_problems(exc)}.",
                              hint="See `kaon tune --help`.") from None
        if choice.path is not None and not json_:
            console_err.print(f"Reading {choice.path} …", highlight=False)
        name, imported = choice.prepare(cfg.workspace)
        if choice.path is not None and not json_:
            console_err.print(
                f"Imported it as dataset [bold]{name}[/]" + (
                    f" ({choice.name} holds an earlier import of other images)"
                    if name != choice.name else "") if imported else
                f"Its images are those of dataset [bold]{name}[/], imported before",
                highlight=False)
        cfg = cfg.model_copy(update={"dataset": name})
        result = run_tune(cfg, progress=not json_)
    if json_:
        print_json(result.to_dict())
        return
    _print_result(result)


_FLAGS = {"time_seconds": "--time", "workers": "--workers", "objective": "--objective",
          "multi_objective": "--multi-objective", "cv_folds": "--cv", "model_name": "--name",
          "seed": "--seed", "trial_seconds": "--trial-time", "sampler": "--sampler",
          "dataset": "--data", "robust": "--robust", "warm_start": "--warm-start",
          "space": "--space"}


def _problems(exc: ValidationError) -> str:
    """pydantic's errors in the CLI's words: the flag, then what is wrong with it."""
    out = []
    for e in exc.errors()[:5]:
        field = str(e["loc"][0]) if e["loc"] else ""
        flag = _FLAGS.get(field, field)
        message = str(e["msg"]).removeprefix("Value error, ")
        out.append(f"{flag}: {message}" if flag else message)
    return "; ".join(out)


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, `timeout`, `kill`) and SIGHUP stop the search as Ctrl-C does: the trial
    processes are killed and the study is kept for --resume. (At-exit hooks do not run on
    SIGTERM, so the trials would otherwise outlive the search.)"""
    import contextlib
    import signal

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread (an embedding app): skip
        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGHUP, interrupt)  # its terminal closed, or ssh dropped


def _print_result(result: TuneResult) -> None:
    from kaon.tune.study import describe_counts

    what = (f"trial {result.trial} (picked), validation" if result.picked
            else "best validation")
    if result.robust:
        what += " (robust scoring)"
    console.print(f"Study [bold]{result.study}[/]: {what} {_metric(result.best_value)}; "
                  f"registered [bold]{result.model}[/] in {result.seconds:.0f}s.",
                  soft_wrap=True)
    console.print(f"Trials: {describe_counts(result.trials)}", soft_wrap=True, highlight=False)
    caveat = " (the test split is too small: see the warning above)" if result.warnings else ""
    console.print(f"Test: {describe_metrics(result.test_metrics)}{caveat}", soft_wrap=True,
                  highlight=False)
    if result.pareto:
        console.print(pareto_table(result.pareto, result.trial))
        console.print(f"Train a point: `kaon train SPEC`, or `kaon tune --resume {result.study} "
                      "--pick TRIAL` (registers NAME-tTRIAL with lineage to the study).",
                      soft_wrap=True, highlight=False)
    for key, path in result.report.items():
        console.print(f"  {key}: {path}", soft_wrap=True, highlight=False)


_METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro F1", "roc_auc": "ROC AUC"}


def describe_metrics(metrics: dict[str, Any]) -> str:
    """``accuracy 0.9100 · macro F1 0.9050 · ROC AUC n/a``: a missing value (NaN, null) as
    n/a, never ``nan``."""
    return " · ".join(f"{_METRIC_NAMES.get(k, k)} {_metric(v)}" for k, v in metrics.items())


def _metric(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.4f}"
    return "n/a"


_SECOND = {"latency_ms": "latency ms", "params": "params"}


def pareto_table(points: list[dict[str, Any]], registered: int | None = None) -> Table:
    """The Pareto front, most accurate first; ``registered``: the trial retrained and
    registered (marked *)."""
    objective = "auc" if "auc" in points[0] else "accuracy"
    second = "latency_ms" if "latency_ms" in points[0] else "params"
    table = Table(title="Pareto front (pick a smaller model for an edge device)",
                  caption="* retrained and registered by this search" if registered is not None
                  else None)
    for column in ("trial", objective, _SECOND[second], *(["params"] if second != "params"
                                                          else []), "family", "epochs"):
        table.add_column(column, justify="left" if column == "family" else "right")
    table.add_column("spec", overflow="fold")
    for p in points:
        mark = "*" if p["trial"] == registered else ""
        cells = [f"{p['trial']}{mark}", f"{p[objective]:.4f}", _number(p[second])]
        if second != "params":
            cells.append(_number(p.get("params")))
        table.add_row(*cells, str(p.get("family", "")), str(p.get("epochs", "")), p["spec"])
    return table


def _number(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) and value < 1000 else f"{value:,.0f}"
