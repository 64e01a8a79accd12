"""Datasets: the named catalog, file formats, imports of user data, and download-and-verify.

>>> from kaon.data import load_dataset
>>> mnist = load_dataset("mnist")          # doctest: +SKIP
>>> mnist.splits["train"].images.shape     # doctest: +SKIP
torch.Size([60000, 1, 28, 28])
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from kaon.data.resolve import describe_dataset, list_datasets, load_dataset
from kaon.data.store import dataset_npz, delete_dataset, import_dataset

if TYPE_CHECKING:
    from kaon.data.dataset import Dataset, Split


def __getattr__(name: str) -> Any:
    """``Dataset`` and ``Split`` hold tensors: torch is imported on their first use, so that
    listing datasets (`kaon data list`) loads none."""
    if name in ("Dataset", "Split"):
        return getattr(import_module("kaon.data.dataset"), name)
    raise AttributeError(f"module 'kaon.data' has no attribute {name!r}")


__all__ = ["Dataset", "Split", "dataset_npz", "delete_dataset", "describe_dataset",
           "import_dataset", "list_datasets", "load_dataset"]
