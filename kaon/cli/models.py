"""``kaon models``: list, show, alias and delete registered models."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from kaon.cli.output import confirm, console, print_json

app = typer.Typer(help="The model registry: versions, aliases, lineage.\n\n"
                       "Example: kaon models list", no_args_is_help=True)


@app.command("list")
def list_(json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every version of every registered model.

    Example: kaon models list --json
    """
    from kaon.registry import list_models

    infos = list_models()
    if json_:
        print_json([i.to_dict() | {"spec": None} for i in infos])
        return
    table = Table(title="models")
    for col in ("model", "version", "aliases", "dataset", "test accuracy", "parent", "created"):
        table.add_column(col)
    for i in infos:
        acc = i.metrics.get("test_accuracy")
        table.add_row(i.name, str(i.version), ", ".join(i.aliases), i.dataset,
                      f"{acc:.4f}" if isinstance(acc, float) else "", i.parent or "",
                      i.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table if infos else "No models yet. Train one: kaon train SPEC.yaml")


@app.command()
def show(model: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
         json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Metadata of one model version: signature, metrics, lineage, artifact.

    Example: kaon models show mnist-mlp@production
    """
    from kaon.registry import get

    info = get(model)
    if json_:
        print_json(info.to_dict())
        return
    table = Table(title=info.ref, show_header=False)
    sig = info.signature
    rows = {
        "aliases": ", ".join(info.aliases) or "-", "run": info.run_id or "-",
        "dataset": f"{info.dataset} (sha256 {info.dataset_hash[:12]}…)",
        "signature": sig.describe(), "normalisation": f"mean {sig.mean} std {sig.std}",
        "classes": ", ".join(sig.class_names), "parent": info.parent or "-",
        "lineage": describe_lineage(info.lineage),
        "artifact": f"{info.artifact} ({info.size_bytes:,} bytes)",
    }
    for key, value in {**rows, **info.metrics}.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def describe_lineage(lineage: dict[str, Any]) -> str:
    """``study tune-3f9c1a2b, trial 7, report /…/tune-report`` (``-`` when there is none)."""
    return ", ".join(f"{key} {value}" for key, value in lineage.items()) or "-"


@app.command()
def alias(model: str = typer.Argument(..., help="NAME:VERSION (or NAME for the latest)."),
          alias: str = typer.Argument(..., help="Alias, e.g. production."),
          remove: bool = typer.Option(False, "--remove", help="Remove the alias instead."),
          json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Point an alias at a version (moving it if needed), or remove it.

    Examples:

        kaon models alias mnist-mlp:2 production

        kaon models alias mnist-mlp production --remove
    """
    from kaon.registry import parse_ref, remove_alias, set_alias

    if remove:
        name = parse_ref(model)[0]
        remove_alias(name, alias)
        console.print(f"Removed alias {name}@{alias}.") if not json_ else print_json(
            {"removed": f"{name}@{alias}"})
        return
    info = set_alias(model, alias)
    if json_:
        print_json({"alias": f"{info.name}@{alias}", "version": info.version})
    else:
        console.print(f"{info.name}@{alias} → version {info.version}")


@app.command()
def delete(model: str = typer.Argument(..., help="NAME:VERSION, NAME@ALIAS, or NAME (all)."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
           json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Delete one version, or a whole model with all its versions and files.

    Example: kaon models delete mnist-mlp:1 --yes
    """
    from kaon.registry import delete as delete_ref
    from kaon.registry import get

    get(model)  # an unknown model: NotFound now, not after the question
    if not yes:
        confirm(f"Delete {model} and its weights?")
    removed = delete_ref(model)
    print_json({"deleted": removed}) if json_ else console.print(
        f"Deleted {', '.join(removed)}.")
