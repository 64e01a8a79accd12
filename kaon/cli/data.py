"""``kaon data``: list datasets, inspect one, import or delete your own. Parsing and printing
only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from kaon.cli.output import confirm, console, print_json
from kaon.errors import ConfigError

if TYPE_CHECKING:  # kaon.data imports torch: loaded by the verbs that need it, not by `kaon`
    from kaon.data.dataset import Dataset

app = typer.Typer(
    help="Datasets: the catalog, what is available here, and imports of your own data.\n\n"
    "Example: kaon data info mnist",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

JSON_HELP = "Print one JSON document instead of a table."
_SIZE = re.compile(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*")


def parse_size(text: str) -> tuple[int, int]:
    """``"28x28"`` (height x width) or ``"28"`` -> (28, 28)."""
    match = _SIZE.fullmatch(text)
    height = int(match[1]) if match else 0
    width = int(match[2] or match[1]) if match else 0
    if not (0 < height <= 4096 and 0 < width <= 4096):
        raise ConfigError(f"invalid --size {text!r}: expected HEIGHTxWIDTH between 1 and 4096",
                          hint="for example --size 28x28")
    return height, width


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List imported and catalog datasets and whether each is available on this machine.

    Example: kaon data list --json
    """
    from kaon.data import list_datasets

    rows = list_datasets()
    if as_json:
        print_json(rows)
        return
    table = Table(title="Datasets")
    for column in ("name", "kind", "status", "classes"):
        table.add_column(column, no_wrap=True)
    table.add_column("location", overflow="fold")
    table.add_column("description", ratio=1)
    for row in rows:
        table.add_row(row["name"], row["kind"], row["status"], str(row["num_classes"]),
                      row["location"] or "-", row["description"])
    console.print(table)


@app.command("info")
def info_cmd(
    name: str = typer.Argument(..., help="Dataset name, as `kaon data list` shows it."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show a dataset's shape and source, and its images per class and split.

    Example: kaon data info pneumoniamnist
    """
    from kaon.data import load_dataset

    dataset = load_dataset(name)
    if as_json:
        print_json(dict(dataset.describe()) | {"meta": dataset.meta})
        return
    c, h, w = dataset.shape
    console.print(f"[bold]{dataset.name}[/]: {len(dataset.class_names)} classes, images "
                  f"{c}x{h}x{w} (CxHxW), from {dataset.source}", highlight=False)
    console.print(_counts_table(dataset))


def _counts_table(dataset: Dataset) -> Table:
    counts = dataset.counts()
    splits = list(counts)
    table = Table(title=f"{dataset.name}: images per class and split")
    table.add_column("class")
    for split in [*splits, "total"]:
        table.add_column(split, justify="right")
    for cls in dataset.class_names:
        per_split = [counts[s][cls] for s in splits]
        table.add_row(cls, *map(str, per_split), str(sum(per_split)))
    totals = [sum(counts[s].values()) for s in splits]
    table.add_row("[bold]total[/]", *map(str, totals), str(sum(totals)), end_section=True)
    return table


@app.command("import")
def import_cmd(
    paths: list[Path] = typer.Argument(
        ..., help="An image folder (one sub-folder per class), an .npz, a .csv, a folder of IDX "
                  "files, or an IDX images file and its labels file."),
    name: str = typer.Option(..., "--name", "-n", help="Name to import as, e.g. chest-xrays."),
    format: str = typer.Option("auto", "--format", help="auto, folder, npz, idx or csv."),
    label_column: str = typer.Option("label", "--label-column", help="CSV column of labels."),
    size: str | None = typer.Option(
        None, "--size", help="Resize folder images to HEIGHTxWIDTH (for CSV: the image shape)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing import."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Import your own dataset, validate it and keep a copy under KAON_HOME/datasets.

    Example: kaon data import ./xrays --name chest-xrays --size 64x64
    """
    from kaon.data import import_dataset

    dataset = import_dataset(paths, name, format=format, label_column=label_column,
                             size=parse_size(size) if size else None, overwrite=overwrite)
    if as_json:
        print_json(dict(dataset.describe()) | {"meta": dataset.meta})
        return
    splits = ", ".join(f"{k} {len(v)}" for k, v in dataset.splits.items())
    console.print(f"Imported [bold]{dataset.name}[/] ({dataset.meta['format']}): "
                  f"{len(dataset.class_names)} classes, {splits}", highlight=False)
    console.print(_counts_table(dataset))


@app.command("delete")
def delete_cmd(
    name: str = typer.Argument(..., help="An imported dataset (catalog ones cannot be deleted)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Delete an imported dataset from KAON_HOME/datasets (runs and models keep their data hash).

    Example: kaon data delete chest-xrays --yes
    """
    from kaon.data.store import delete_dataset, imported_folder

    imported_folder(name)  # an unknown or catalog dataset: refused before the question
    if not yes:
        confirm(f"Delete dataset {name}?")
    delete_dataset(name)
    if as_json:
        print_json({"deleted": name})
    else:
        console.print(f"Deleted dataset [bold]{name}[/].")
