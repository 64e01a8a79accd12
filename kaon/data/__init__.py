"""Datasets: the named catalog, file formats, imports of user data, and download-and-verify.

>>> from kaon.data import load_dataset
>>> mnist = load_dataset("mnist")          # doctest: +SKIP
>>> mnist.splits["train"].images.shape     # doctest: +SKIP
torch.Size([60000, 1, 28, 28])
"""

from kaon.data.dataset import Dataset, Split
from kaon.data.resolve import describe_dataset, list_datasets, load_dataset
from kaon.data.store import dataset_npz, delete_dataset, import_dataset

__all__ = ["Dataset", "Split", "dataset_npz", "delete_dataset", "describe_dataset",
           "import_dataset", "list_datasets", "load_dataset"]
