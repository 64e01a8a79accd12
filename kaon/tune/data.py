"""``kaon tune --data PATH``: a user's own image folder, .npz or .csv, imported before the search.

A ``--data`` value that names a dataset (imported, or in the catalog) is that dataset. Anything
else that is an existing file or folder is imported the way ``kaon data import`` does, under a
name taken from the path (``./xrays`` → ``xrays``; ``xrays-2`` when ``xrays`` is taken by
another source or is a catalog name), and the search runs on that name, so ``--resume`` and the
registered model's lineage refer to the imported copy. Tuning the same path again reuses its
import when the images are the same (same files, same ``--size``); when they differ, they are
imported under the next free name, so the models and studies made from the earlier import keep
their data. The reader's checks (no images, one class, mixed sizes without ``--size``) run
before any search work.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kaon.data import catalog, store
from kaon.data.dataset import Dataset
from kaon.db.models import DEFAULT_WORKSPACE
from kaon.errors import ConfigError, ConflictError, DataError, NotFoundError
from kaon.names import is_valid_name

NAME_CHARS = 40  # leaves room for "-tuned-trial" and a "-N" suffix within 64 characters
TRIES = 50


@dataclass(frozen=True)
class DataChoice:
    """The dataset a search runs on; ``path`` is imported as ``name`` by :meth:`prepare`."""

    name: str
    path: Path | None = None
    size: tuple[int, int] | None = None

    def prepare(self, workspace: str = DEFAULT_WORKSPACE) -> tuple[str, bool]:
        """Import ``path`` (if any): the dataset name to tune, and whether it was imported
        now (False: a dataset name, or an earlier import of the same images)."""
        if self.path is None:
            return self.name, False
        splits, class_names, fmt, paths = store.read_any(self.path, size=self.size)
        digest = Dataset(self.name, splits, class_names).content_hash()
        name, same = _place(self.path, workspace, digest)
        if not same:
            store.save_read(name, splits, class_names, fmt, paths, overwrite=True,
                            workspace=workspace)
        return name, not same


def dataset_for(data: str, size: tuple[int, int] | None = None,
                workspace: str = DEFAULT_WORKSPACE) -> DataChoice:
    """What ``--data`` (and ``--size``) mean, decided without reading any image."""
    if is_valid_name(data) and _known(data, workspace):
        if size is not None:
            raise ConfigError(f"--size resizes the images of a folder given as --data PATH, but "
                              f"{data!r} is a dataset that is already imported or in the catalog.",
                              hint="Drop --size, or give the folder's path: "
                                   f"--data ./{data} --size HxW.")
        return DataChoice(data)
    path = Path(data).expanduser()
    if not path.exists():
        if is_valid_name(data):  # an unknown name: loading it lists the known ones
            return DataChoice(data)
        raise NotFoundError(f"--data {data!r} is neither a dataset name nor an existing file or "
                            "folder.",
                            hint="Give a dataset name (`kaon data list`) or the path of an image "
                                 "folder (one sub-folder per class), an .npz or a .csv.")
    return DataChoice(import_name(path, workspace), path, size)


def import_name(path: Path, workspace: str = DEFAULT_WORKSPACE) -> str:
    """The name ``path`` is imported as: its own earlier import's, else the first free one."""
    for name, folder in _candidates(path, workspace):
        if not folder.exists() or _source(folder) == str(path.resolve()):
            return name
    raise _all_taken(path)


def _place(path: Path, workspace: str, digest: str) -> tuple[str, bool]:
    """Where the images of ``path`` (hashing to ``digest``) go: (name, True) for an earlier
    import of the same images, else (the first free name, False)."""
    for name, folder in _candidates(path, workspace):
        if not folder.exists():
            return name, False
        if _source(folder) == str(path.resolve()) and _meta(folder).get("content_hash") == digest:
            return name, True
    raise _all_taken(path)


def _candidates(path: Path, workspace: str) -> Iterator[tuple[str, Path]]:
    """The names ``path`` may be imported as, in order (``x``, ``x-2`` …, never a catalog
    dataset's), with their folders."""
    resolved = path.resolve()
    base = slug(resolved.stem if resolved.is_file() else resolved.name)
    root = store.datasets_root(workspace)
    for i in range(1, TRIES + 1):
        name = base if i == 1 else f"{base}-{i}"
        if catalog.find(name) is None:
            yield name, root / name


def _all_taken(path: Path) -> ConflictError:
    resolved = path.resolve()
    base = slug(resolved.stem if resolved.is_file() else resolved.name)
    return ConflictError(f"Datasets {base}, {base}-2 … {base}-{TRIES} are all taken.",
                         hint=f"Import it under a name of your own: `kaon data import {path} "
                              "--name NAME`, then `kaon tune --data NAME`.")


def slug(text: str) -> str:
    """A dataset name made of ``text``: lower case, other characters as '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:NAME_CHARS].strip("-._")
    return name or "data"


def _known(name: str, workspace: str) -> bool:
    imported = store.datasets_root(workspace) / name / store.META_FILE
    return imported.is_file() or catalog.find(name) is not None


def _source(folder: Path) -> str | None:
    source = _meta(folder).get("source")
    return None if source is None else str(source)


def _meta(folder: Path) -> dict[str, object]:
    try:
        return store.read_meta(folder)
    except DataError:
        return {}
