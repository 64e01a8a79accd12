"""``kaon tune``: search architectures and hyperparameters under a time budget."""

from __future__ import annotations

from pathlib import Path

import typer

from kaon.cli.output import console, print_json
from kaon.errors import ConfigError


def tune(
    data: str | None = typer.Option(None, "--data", help="Dataset name (catalog or imported)."),
    time_: str = typer.Option("10m", "--time", help="Wall-clock budget incl. the final retrain."),
    objective: str = typer.Option("accuracy", "--objective", help="accuracy or auc."),
    multi_objective: str | None = typer.Option(
        None, "--multi-objective", help="Also minimise latency or params (Pareto front)."),
    workers: int | None = typer.Option(
        None, "--workers", help="Parallel trials (default: GPUs, else cores)."),
    trial_time: str | None = typer.Option(None, "--trial-time", help="Cap per trial, e.g. 2m."),
    space: Path | None = typer.Option(None, "--space", help="YAML overriding the search space."),
    name: str | None = typer.Option(None, "--name", help="Model name (default DATA-tuned)."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (default) or random."),
    cv: int | None = typer.Option(
        None, "--cv", help="Cross-validate each trial on K folds of train + val (0: off; "
                           "default: 3 when the validation split has under 1,000 images)."),
    warm_start: bool = typer.Option(
        True, "--warm-start/--no-warm-start",
        help="Try a portfolio of known-good configurations before the sampler's own."),
    seed: int = typer.Option(0, "--seed"),
    resume: str | None = typer.Option(None, "--resume", help="Continue a killed study."),
    json_: bool = typer.Option(False, "--json", help="Print a JSON summary as the last line."),
) -> None:
    """Find a good architecture and hyperparameters for a dataset, retrain, register.

    Examples:

        kaon tune --data breastmnist --time 5m

        kaon tune --data pneumoniamnist --time 10m --objective auc --json

        kaon tune --data fashion-mnist --time 15m --multi-objective latency

        kaon tune --data my-xrays --time 30m --cv 5

        kaon tune --resume tune-3f9c1a2b
    """
    from kaon.tune import TuneConfig, load_space
    from kaon.tune import resume as resume_study
    from kaon.tune import tune as run_tune
    from kaon.tune.budget import parse_duration

    if resume:
        result = resume_study(resume, progress=not json_)
    else:
        if not data:
            raise ConfigError("Give --data NAME (or --resume STUDY).",
                              hint="Example: kaon tune --data breastmnist --time 5m")
        fields = {"dataset": data, "time_seconds": parse_duration(time_),
                  "objective": objective, "multi_objective": multi_objective, "seed": seed,
                  "model_name": name, "sampler": sampler, "space": load_space(space),
                  "warm_start": warm_start}
        if workers:
            fields["workers"] = workers
        if trial_time:
            fields["trial_seconds"] = parse_duration(trial_time)
        if cv is not None:
            fields["cv_folds"] = cv
        try:
            cfg = TuneConfig.model_validate(fields)
        except ValueError as exc:
            raise ConfigError(f"Invalid tune options: {exc}") from None
        result = run_tune(cfg, progress=not json_)
    if json_:
        print_json(result.to_dict())
        return
    console.print(f"Study [bold]{result.study}[/]: trials {result.trials}; best validation "
                  f"{result.best_value:.4f}; registered [bold]{result.model}[/] in "
                  f"{result.seconds:.0f}s.", soft_wrap=True)
    console.print(f"Test: {result.test_metrics}", soft_wrap=True)
    if result.pareto:
        console.print("Pareto front (objective vs second objective):")
        for p in result.pareto:
            console.print(f"  trial {p['trial']}: {p}", soft_wrap=True)
    for key, path in result.report.items():
        console.print(f"  {key}: {path}", soft_wrap=True, highlight=False)
