"""``kaon train``: parse, call :func:`kaon.train.train`, print."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from kaon.cli.output import console, print_json
from kaon.errors import ConfigError


def train(
    spec: Path | None = typer.Argument(None, help="Training spec (YAML)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a spec key, e.g. --set optimizer.lr=0.01 (repeatable)."),
    resume: str | None = typer.Option(
        None, "--resume", help="Continue an interrupted run from its last checkpoint."),
    json_: bool = typer.Option(False, "--json", help="Print a JSON summary as the last line."),
) -> None:
    """Train a model from a spec, evaluate it on the test split and register it.

    Examples:

        kaon train examples/mnist_mlp.yaml

        kaon train examples/mnist_mlp.yaml --set epochs=1 --set optimizer.lr=0.01 --json

        kaon train --resume run-3f9c1a2b7d4e
    """
    from kaon.train import resume as resume_run
    from kaon.train import train as train_spec

    if (spec is None) == (resume is None):
        raise ConfigError("Give a spec file or --resume RUN_ID" + (
            ", not both: a resumed run keeps its own spec." if spec else "."),
            hint="Example: kaon train examples/mnist_mlp.yaml")
    progress = not json_
    if resume:
        result = resume_run(resume, progress=progress)
    else:
        assert spec is not None
        result = train_spec(spec, set_, progress=progress)
    if json_:
        print_json(result.to_dict())
        return
    table = Table(title=f"run {result.run_id}", show_header=False)
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if result.model:
        console.print(f"Registered [bold]{result.model}[/]. Next: kaon evaluate {result.model}"
                      f"   ·   kaon serve {result.model}", soft_wrap=True)
