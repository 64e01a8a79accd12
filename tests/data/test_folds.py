"""``Split.fold``: stratified, seeded K-fold splits for cross-validated tuning trials."""

from __future__ import annotations

import pytest
import torch

from kaon.data import Split


def labelled(counts: list[int]) -> Split:
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8)
    return Split(images.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous(), labels)


def test_the_held_out_folds_partition_the_images_and_keep_the_class_balance() -> None:
    split = labelled([70, 30])
    held_sizes, held_positives = [], []
    for fold in range(3):
        train, held = split.fold(3, fold, seed=7)
        assert len(train) + len(held) == len(split)
        held_sizes.append(len(held))
        held_positives.append(int(held.labels.sum()))
    assert sum(held_sizes) == 100 and max(held_sizes) - min(held_sizes) <= 2
    assert sum(held_positives) == 30 and all(9 <= p <= 11 for p in held_positives)


def test_every_image_is_held_out_exactly_once() -> None:
    split = labelled([5, 5, 5])
    marks = torch.arange(len(split))  # images carry their index in the pixel value
    seen = torch.cat([split.fold(4, fold, seed=1)[1].images[:, 0, 0, 0].long()
                      for fold in range(4)])
    assert sorted(seen.tolist()) == marks.tolist()


def test_the_same_seed_gives_the_same_folds_and_another_seed_other_ones() -> None:
    split = labelled([40, 40])
    _, a = split.fold(3, 0, seed=0)
    _, b = split.fold(3, 0, seed=0)
    _, c = split.fold(3, 0, seed=1)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_a_fold_outside_the_folds_is_refused() -> None:
    with pytest.raises(ValueError, match=r"fold 3 is not in 0\.\.2"):
        labelled([4, 4]).fold(3, 3)
