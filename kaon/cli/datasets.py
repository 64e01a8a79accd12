"""``kaon datasets …``: the platform workspace's own datasets (``kaon data`` is this machine's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kaon.cli.output import confirm, console, print_json
from kaon.cli.remote import Json, Key, Url, connect

app = typer.Typer(help="Datasets of your platform workspace, for its jobs and tuning "
                       "searches.\n\nExample: kaon datasets upload ./xrays --name chest-xrays",
                  no_args_is_help=True)


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="datasets")
    for col in ("name", "kind", "status", "classes", "splits", "shape"):
        table.add_column(col, no_wrap=col == "name")
    for r in rows:
        splits = ", ".join(f"{k} {v}" for k, v in (r.get("splits") or {}).items())
        shape = "x".join(str(n) for n in r.get("shape") or [])
        table.add_row(r["name"], r["kind"], r["status"], str(r["num_classes"]), splits, shape)
    return table


@app.command("upload")
def upload(
    paths: Annotated[list[Path], typer.Argument(
        help="An .npz, an image folder (one sub-folder per class), a .csv, or IDX files: "
             "whatever `kaon data import` reads.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name in the workspace.")],
    format: Annotated[str, typer.Option("--format", help="auto, folder, npz, idx or csv.")
                      ] = "auto",
    label_column: Annotated[str, typer.Option("--label-column", help="CSV column of labels.")
                            ] = "label",
    size: Annotated[str | None, typer.Option(
        "--size", help="Resize folder images to HEIGHTxWIDTH (for CSV: the image shape).")
                    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the workspace's "
                                                                "dataset of that name.")] = False,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Read and check a dataset here, then upload it to the workspace as one .npz (plain
    arrays, no pickles). Needs the train scope.

    Examples:

        kaon datasets upload ./xrays --name chest-xrays --size 64x64

        kaon datasets upload breast.npz --name breast --overwrite --json
    """
    from kaon.cli.data import parse_size
    from kaon.data import dataset_npz

    with connect(url, key) as client:
        client.me()  # credentials and URL first: packing a large dataset can take a while
        payload = dataset_npz(paths, format=format, label_column=label_column,
                              size=parse_size(size) if size else None)
        row = client.upload_dataset(name, payload, overwrite=overwrite)
    if json_:
        print_json(row)
        return
    console.print(f"Uploaded [bold]{row['name']}[/] ({len(payload):,} bytes).")
    console.print(_table([row]))


@app.command("list")
def list_(url: Url = None, key: Key = None, json_: Json = False) -> None:
    """The workspace's datasets, then the shared catalog.

    Examples:

        kaon datasets list

        kaon datasets list --json
    """
    with connect(url, key) as client:
        rows = client.datasets()
    if json_:
        print_json(rows)
        return
    console.print(_table(rows))


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="A dataset of this workspace.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Delete one of the workspace's datasets (the catalog's cannot be deleted). Needs the
    train scope.

    Example:

        kaon datasets delete chest-xrays --yes
    """
    with connect(url, key) as client:
        if not yes:
            client.dataset(name)  # an unknown one: NotFound now, not after the question
            confirm(f"Delete dataset {name} of the workspace?")
        client.delete_dataset(name)
    if json_:
        print_json({"deleted": name})
    else:
        console.print(f"Deleted dataset [bold]{name}[/].")
