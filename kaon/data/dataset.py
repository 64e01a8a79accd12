"""In-memory datasets: uint8 image tensors plus integer labels, per split."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Split:
    """One split of a dataset: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | slice) -> Split:
        return Split(self.images[index], self.labels[index])

    def fold(self, folds: int, fold: int, seed: int = 0) -> tuple[Split, Split]:
        """(train, held-out) for fold ``fold`` of ``folds`` stratified folds.

        Each class's images are shuffled with ``seed`` and dealt round-robin into the folds,
        so every fold keeps the class balance and the same seed gives the same folds.
        """
        if not 0 <= fold < folds:
            raise ValueError(f"fold {fold} is not in 0..{folds - 1}")
        generator = torch.Generator().manual_seed(seed)
        assigned = torch.empty(len(self), dtype=torch.int64)
        for label in self.labels.unique(sorted=True):
            index = (self.labels == label).nonzero().flatten()
            index = index[torch.randperm(len(index), generator=generator)]
            assigned[index] = torch.arange(len(index)) % folds
        held = assigned == fold
        return self.subset(~held), self.subset(held)


@dataclass
class Dataset:
    """A named dataset. Splits are usually ``train``, ``val`` (optional) and ``test``."""

    name: str
    splits: dict[str, Split]
    class_names: list[str]
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        first = next(iter(self.splits.values()))
        c, h, w = first.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def content_hash(self) -> str:
        """SHA-256 over every split's images and labels, in split-name order."""
        digest = hashlib.sha256()
        for name in sorted(self.splits):
            split = self.splits[name]
            digest.update(name.encode())
            digest.update(split.images.contiguous().numpy().tobytes())
            digest.update(split.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def with_test_holdout(self, fraction: float, seed: int = 12345) -> Dataset:
        """A copy whose ``test`` split is a fixed random share of ``train`` (for datasets that
        ship without one); the same fraction and seed always hold out the same images."""
        train = self.splits["train"]
        kept, held = self.holdout_indices(fraction, seed)
        splits = {**self.splits, "train": train.subset(kept), "test": train.subset(held)}
        return Dataset(self.name, splits, self.class_names, self.source,
                       {**self.meta, "test_holdout": str(fraction)})

    def holdout_indices(self, fraction: float, seed: int = 12345) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
        """The ``train`` indices :meth:`with_test_holdout` keeps and holds out, without
        copying any image."""
        order = torch.randperm(len(self.splits["train"]),
                               generator=torch.Generator().manual_seed(seed))
        n_test = max(1, round(len(order) * fraction))
        return order[:-n_test].sort().values, order[-n_test:].sort().values

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class name, per split."""
        out: dict[str, dict[str, int]] = {}
        for split_name, split in self.splits.items():
            bins = torch.bincount(split.labels, minlength=self.num_classes).tolist()
            out[split_name] = {self.class_names[i]: int(n) for i, n in enumerate(bins)}
        return out

    def describe(self) -> Mapping[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "shape": list(self.shape),
            "classes": self.class_names,
            "splits": {k: len(v) for k, v in self.splits.items()},
            "counts": self.counts(),
        }
