"""The named catalog: datasets Kaon knows by name, where they come from and how to verify them.

An entry lists its files, each with the URLs it can be downloaded from and a SHA-256. Entries
live in a plain registry (:func:`register`, :func:`unregister`), so a deployment or a test can
add a dataset served from its own URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kaon.errors import NotFoundError

Format = Literal["idx", "npz"]


@dataclass(frozen=True)
class CatalogFile:
    """One file of a catalog dataset.

    ``sha256`` is the hash of the file's bytes, or of its gunzipped bytes when ``decompressed``
    is true (mirrors re-compress IDX files, so only the decompressed bytes are canonical).
    """

    name: str
    sha256: str
    urls: tuple[str, ...]
    decompressed: bool = False


@dataclass(frozen=True, eq=False)
class CatalogEntry:
    """A named dataset: its files and, for IDX, which images/labels pair makes each split.

    Entries compare and hash by identity, so a loaded dataset is cached per entry object.
    """

    name: str
    description: str
    format: Format
    files: tuple[CatalogFile, ...]
    class_names: tuple[str, ...]
    idx_splits: dict[str, tuple[str, str]] = field(default_factory=dict)
    license: str = ""

    @property
    def file_names(self) -> list[str]:
        return [f.name for f in self.files]


_REGISTRY: dict[str, CatalogEntry] = {}


def register(entry: CatalogEntry, *, replace: bool = False) -> CatalogEntry:
    """Add ``entry`` to the catalog; an existing name needs ``replace=True``."""
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"catalog already has an entry named {entry.name!r}")
    names = set(entry.file_names)
    for images, labels in entry.idx_splits.values():
        if images not in names or labels not in names:
            raise ValueError(f"{entry.name}: idx split files must be among the entry's files")
    if entry.format == "idx" and not entry.idx_splits:
        raise ValueError(f"{entry.name}: an idx entry needs idx_splits")
    if entry.format == "npz" and len(entry.files) != 1:
        raise ValueError(f"{entry.name}: an npz entry has exactly one file")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove an entry (no error when it is absent)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return sorted(_REGISTRY)


def entries() -> list[CatalogEntry]:
    return [_REGISTRY[name] for name in names()]


def find(name: str) -> CatalogEntry | None:
    return _REGISTRY.get(name)


def get(name: str) -> CatalogEntry:
    """The entry called ``name``; :class:`NotFoundError` lists the known names otherwise."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise NotFoundError(f"no catalog dataset named {name!r}; the catalog has: "
                            f"{', '.join(names())}",
                            hint="pick one of those names, or import your own data with "
                                 "`kaon data import PATH --name NAME`")
    return entry


# --- built-in entries -------------------------------------------------------------------------

_IDX_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _idx_files(mirrors: tuple[str, ...], sha256: dict[str, str]) -> tuple[CatalogFile, ...]:
    return tuple(CatalogFile(name, digest, tuple(m + name for m in mirrors), decompressed=True)
                 for name, digest in sha256.items())


# SHA-256 of the DECOMPRESSED IDX bytes: the canonical files (MNIST train-images MD5
# 6bbc9ace898e44ae57da46a324031adb after gunzip) whatever gzip level a mirror used.
MNIST = CatalogEntry(
    name="mnist",
    description="MNIST handwritten digits, 28x28 grey, 60,000 train / 10,000 test",
    format="idx",
    files=_idx_files(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz":
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte.gz":
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz":
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz":
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    class_names=tuple(str(d) for d in range(10)),
    idx_splits=_IDX_SPLITS,
    license="CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J.C. Burges)",
)

FASHION_MNIST = CatalogEntry(
    name="fashion-mnist",
    description="Fashion-MNIST, 10 clothing classes, 28x28 grey, 60,000 train / 10,000 test",
    format="idx",
    files=_idx_files(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz":
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz":
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz":
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz":
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    idx_splits=_IDX_SPLITS,
    license="MIT (Zalando Research)",
)

# MedMNIST v2 npz files, downloaded from the MedMNIST+ Zenodo record. The SHA-256 values identify
# the copies in the project's shared datasets folder (a re-saved public copy), not necessarily the
# bytes Zenodo serves: if they differ, verifying a download fails loudly and deletes the file,
# which is the intended behaviour; put a known copy on KAON_DATA_PATH instead.
_ZENODO = "https://zenodo.org/records/10519652/files/"

PNEUMONIAMNIST = CatalogEntry(
    name="pneumoniamnist",
    description="PneumoniaMNIST (MedMNIST v2): chest X-rays, 28x28 grey, 4,708 / 524 / 624",
    format="npz",
    files=(CatalogFile("pneumoniamnist.npz",
                       "d0bfa3330f26554c4117328b1117f52bfb3746404b0594c58f37a09b4314d396",
                       (_ZENODO + "pneumoniamnist.npz?download=1",)),),
    class_names=("normal", "pneumonia"),
    license="CC BY 4.0",
)

BREASTMNIST = CatalogEntry(
    name="breastmnist",
    description="BreastMNIST (MedMNIST v2): breast ultrasound, 28x28 grey, 546 / 78 / 156",
    format="npz",
    files=(CatalogFile("breastmnist.npz",
                       "ce5b81972a53a35bac77bc672ec94ce0dcf0ea03bfc5e57283c5fb34c98e5c69",
                       (_ZENODO + "breastmnist.npz?download=1",)),),
    class_names=("malignant", "normal/benign"),
    license="CC BY 4.0",
)

for _entry in (MNIST, FASHION_MNIST, PNEUMONIAMNIST, BREASTMNIST):
    register(_entry)
