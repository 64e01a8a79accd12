"""Checks before a search that warn rather than refuse: a test split too small to say much.

The search and the retrain do not need the test split, so a small one is no reason to stop;
but a model registered with "test accuracy 0.0, ROC AUC n/a" from one test image must not come
as a surprise. The warnings are printed on stderr before any work (stdout stays the single
``--json`` line) and kept in the result and the report.
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.text import Text

from kaon.data import Dataset

MIN_TEST_PER_CLASS = 2  # test images of each class under which test metrics say little
_LISTED = 5  # classes named in a warning


def check_test_split(dataset: Dataset, test_fraction: float | None) -> list[dict[str, str]]:
    """A warning (message and hint) when the test split the tuned model will be evaluated on
    misses a class that has training images, or has fewer than ``MIN_TEST_PER_CLASS`` images
    of one. ``test_fraction``: the share of train held out as test when the dataset has no
    test split (the same images the retrain holds out)."""
    classes, train = dataset.num_classes, dataset.splits["train"]
    if test_fraction:  # the labels of the hold-out alone: no copy of the images
        test_labels: torch.Tensor | None = train.labels[dataset.holdout_indices(test_fraction)[1]]
    else:
        test = dataset.splits.get("test")
        test_labels = test.labels if test is not None else None
    trained = torch.bincount(train.labels, minlength=classes).tolist()
    tested = (torch.bincount(test_labels, minlength=classes).tolist()
              if test_labels is not None else [0] * classes)
    short = [i for i in range(classes) if trained[i] > 0 and tested[i] < MIN_TEST_PER_CLASS]
    if not short:
        return []
    return [{"message": _message(dataset, tested, short, test_fraction),
             "hint": _hint(test_fraction)}]


def _message(dataset: Dataset, tested: list[int], short: list[int],
             test_fraction: float | None) -> str:
    total = sum(tested)
    where = (f"a {test_fraction:.0%} hold-out of the training images" if test_fraction
             else "the dataset's own test split")
    per_class = ", ".join(f"'{dataset.class_names[i]}' {tested[i]}" for i in short[:_LISTED])
    more = f", and {len(short) - _LISTED} more classes" if len(short) > _LISTED else ""
    return (f"The test split of {dataset.name!r} ({where}) is too small to judge the tuned "
            f"model: {total} image{'' if total == 1 else 's'}, fewer than "
            f"{MIN_TEST_PER_CLASS} of some classes (test images of {per_class}{more}). Its "
            "test metrics (accuracy, macro F1) will mean little"
            + ("; ROC AUC is null when a class is missing." if dataset.num_classes == 2
               else "."))


def _hint(test_fraction: float | None) -> str:
    need = f"at least {MIN_TEST_PER_CLASS} images of each class"
    if test_fraction:
        return (f"Give a larger test split, {need}: add images ({test_fraction:.0%} of them "
                "are held out for test), or import the data with a test split of its own (a "
                "test/ folder next to train/, or test_images and test_labels in an .npz).")
    return (f"Give a larger test split, {need}: add test images and import the dataset "
            "again (`kaon data import PATH --name NAME --overwrite`).")


def emit(warnings: list[dict[str, str]], console: Console | None = None) -> None:
    """Print each warning and its hint on stderr, as errors are printed."""
    out = console or Console(stderr=True)
    for warning in warnings:
        out.print(Text.assemble(("Warning: ", "bold yellow"), warning["message"]),
                  soft_wrap=True)
        out.print(Text.assemble(("Hint: ", "yellow"), warning["hint"]), soft_wrap=True)
