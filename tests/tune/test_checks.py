"""Warnings before a search: a test split too small for its metrics to mean anything."""

from __future__ import annotations

import io

import torch
from rich.console import Console

from kaon.data import Dataset, Split
from kaon.tune.checks import check_test_split, emit


def split(labels: list[int]) -> Split:
    return Split(torch.zeros((len(labels), 1, 4, 4), dtype=torch.uint8),
                 torch.tensor(labels, dtype=torch.int64))


def dataset(train: list[int], test: list[int] | None = None) -> Dataset:
    splits = {"train": split(train)} | ({"test": split(test)} if test is not None else {})
    return Dataset("scans", splits, ["ok", "sick"])


def test_a_hold_out_of_one_image_warns_and_says_how_to_get_a_larger_one() -> None:
    found = check_test_split(dataset([0, 1] * 6), test_fraction=0.1)  # 12: one held out
    assert len(found) == 1
    message, hint = found[0]["message"], found[0]["hint"]
    assert "'scans' (a 10% hold-out of the training images)" in message
    assert "1 image," in message and "mean little" in message
    assert "Give a larger test split" in hint and "test_images" in hint


def test_a_test_split_missing_a_class_warns() -> None:
    found = check_test_split(dataset([0, 1] * 10, test=[0] * 10), test_fraction=None)
    assert len(found) == 1 and "'sick' 0" in found[0]["message"]
    assert "dataset's own test split" in found[0]["message"]
    assert "--overwrite" in found[0]["hint"]


def test_a_test_split_with_two_images_of_each_class_is_fine() -> None:
    assert check_test_split(dataset([0, 1] * 10, test=[0, 1, 0, 1]), None) == []
    # a class with no training images at all is not the test split's problem
    assert check_test_split(dataset([0] * 10 + [0] * 5, test=[0, 0]), None) == []


def test_warnings_print_with_their_hint() -> None:
    out = io.StringIO()
    emit([{"message": "Small.", "hint": "Grow it."}], Console(file=out, width=200))
    assert out.getvalue().splitlines() == ["Warning: Small.", "Hint: Grow it."]
