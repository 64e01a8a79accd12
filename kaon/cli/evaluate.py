"""``kaon evaluate``: metrics and plots for a registered model."""

from __future__ import annotations

import typer
from rich.table import Table

from kaon.cli.output import console, print_json


def evaluate(
    model: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
    data: str | None = typer.Option(None, "--data", help="Dataset (default: the training one)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate on."),
    json_: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
) -> None:
    """Accuracy, per-class precision/recall/F1, ROC AUC (binary) and a confusion matrix.

    Writes metrics.json and PNG plots next to the run.

    Examples:

        kaon evaluate mnist-mlp@production

        kaon evaluate mnist-mlp:2 --data mnist --split test --json
    """
    from kaon.train.evaluate import evaluate as run_evaluation

    result = run_evaluation(model, data, split)
    if json_:
        print_json(result.to_dict())
        return
    report = result.report
    table = Table(title=f"{result.model} on {result.dataset}/{result.split} "
                        f"({report['count']} images)")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}",
                      f"{row['f1']:.4f}", str(row["support"]))
    console.print(table)
    line = f"accuracy [bold]{report['accuracy']:.4f}[/]   macro F1 {report['macro_f1']:.4f}"
    if "roc_auc" in report:
        line += f"   ROC AUC {report['roc_auc']:.4f}"
    console.print(line)
    for key, path in result.files.items():
        console.print(f"  {key}: {path}", highlight=False, soft_wrap=True)
