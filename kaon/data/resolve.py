"""Find a dataset by name: imported first, then KAON_DATA_PATH, then a verified download.

Resolution order for ``load_dataset(name, workspace)``:

1. the workspace's imported dataset (``KAON_HOME/datasets/<name>/`` for the default workspace,
   see :func:`kaon.data.store.datasets_root`);
2. a catalog entry whose files sit in ``<dir>/<name>/`` for a ``dir`` on KAON_DATA_PATH;
3. the same files in ``KAON_HOME/cache/<name>/``, downloaded and verified earlier;
4. a download from the entry's URLs into that cache (only when KAON_DOWNLOAD is true).
"""

from __future__ import annotations

import dataclasses
import difflib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaon.config import get_settings
from kaon.data import catalog, store
from kaon.data.catalog import CatalogEntry
from kaon.data.download import download_first
from kaon.db.models import DEFAULT_WORKSPACE
from kaon.errors import DataError, NotFoundError

if TYPE_CHECKING:  # torch: imported when a dataset is loaded, not to list or describe one
    from kaon.data.dataset import Dataset

# (logical file name, resolved path, mtime_ns, size) for every file a dataset is read from
Stamp = tuple[tuple[str, str, int, int], ...]


def load_dataset(name: str, workspace: str = DEFAULT_WORKSPACE) -> Dataset:
    """Load the dataset called ``name`` (see the module docstring for where it is looked for).

    Loaded datasets are cached in-process, keyed by the files' paths, sizes and mtimes; each call
    returns a fresh :class:`Dataset` whose tensors are shared with the cache, so treat them as
    read-only.
    """
    store.validate_name(name)
    settings = get_settings()
    imported = store.datasets_root(workspace) / name
    if (imported / store.META_FILE).is_file():
        return _fresh(_load("imported", name, None, _stamp(
            {f: imported / f for f in (store.META_FILE, store.DATA_FILE)})))
    entry = catalog.find(name)
    if entry is None:
        known = sorted({*catalog.names(), *(m["name"] for m in store.list_imported(workspace))})
        close = difflib.get_close_matches(name, known, n=1)
        raise NotFoundError(f"unknown dataset {name!r}: it is neither imported (looked in "
                            f"{imported}) nor in the catalog. Known datasets: {', '.join(known)}",
                            hint=(f"did you mean {close[0]!r}? Else " if close else "")
                            + "run `kaon data list`, or import your own data with "
                              f"`kaon data import PATH --name {name}`")
    looked = [f"{imported}: not imported"]
    if not settings.data_dirs:
        looked.append("KAON_DATA_PATH: not set")
    for folder in [*(d / name for d in settings.data_dirs), settings.cache_dir / name]:
        files, problem = locate(entry, folder)
        if files is not None:
            return _fresh(_load("catalog", name, entry, _stamp(files)))
        looked.append(f"{folder}: {problem}")
    if settings.download:
        return _fresh(_load("catalog", name, entry, _stamp(fetch(entry))))
    looked.append("download: disabled (KAON_DOWNLOAD=false)")
    raise NotFoundError(
        f"dataset {name!r} not found; looked in:\n  - " + "\n  - ".join(looked),
        hint=f"set KAON_DATA_PATH to a folder holding {name}/ with {', '.join(entry.file_names)}; "
             f"or set KAON_DOWNLOAD=true to fetch it from {entry.files[0].urls[0]}; "
             f"or import a copy with `kaon data import PATH --name {name}`",
    )


def list_datasets(workspace: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
    """One row per dataset name: the workspace's imports, then catalog entries they do not
    shadow (each group by name).

    Each row has ``name``, ``kind`` (imported/catalog), ``status`` (available, downloadable,
    missing, or broken for an unreadable import), ``location`` (a folder or None), ``format``,
    ``num_classes``, ``class_names`` and ``description``; imports also ``splits``, ``shape``
    and ``created_at``.
    """
    own = [_imported_row(meta) for meta in store.list_imported(workspace)]
    taken = {r["name"] for r in own}
    shared = [_catalog_row(e) for e in sorted(catalog.entries(), key=lambda e: e.name)
              if e.name not in taken]
    return sorted(own, key=lambda r: r["name"]) + shared


def describe_dataset(name: str, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
    """The :func:`list_datasets` row of ``name`` (the workspace's import, else the catalog's
    entry), without loading its images; NotFoundError when there is neither."""
    store.validate_name(name)
    folder = store.datasets_root(workspace) / name
    if (folder / store.META_FILE).is_file():
        meta = store.read_meta(folder)
        return _imported_row(meta | {"name": name, "location": str(folder)})
    entry = catalog.find(name)
    if entry is None:
        raise NotFoundError(f"No dataset {name!r} in this workspace or the catalog.",
                            hint="List them with `kaon datasets list` (platform) or "
                                 "`kaon data list`; upload one with `kaon datasets upload`.")
    return _catalog_row(entry)


def _imported_row(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": meta["name"], "kind": "imported",
        "status": "broken" if "error" in meta else "available",
        "location": meta["location"], "format": meta.get("format", ""),
        "num_classes": len(meta["class_names"]), "class_names": meta["class_names"],
        "splits": meta.get("splits"), "shape": meta.get("shape"),
        "created_at": meta.get("created_at"),
        "description": meta.get("error") or f"imported from {meta.get('source', '?')}",
    }


def _catalog_row(entry: CatalogEntry) -> dict[str, Any]:
    settings = get_settings()
    folders = [*(d / entry.name for d in settings.data_dirs), settings.cache_dir / entry.name]
    location = next((f for f in folders if locate(entry, f)[0] is not None), None)
    status = "available" if location else "downloadable" if settings.download else "missing"
    return {
        "name": entry.name, "kind": "catalog", "status": status,
        "location": str(location) if location else None, "format": entry.format,
        "num_classes": len(entry.class_names), "class_names": list(entry.class_names),
        "description": entry.description,
    }


def locate(entry: CatalogEntry, folder: Path) -> tuple[dict[str, Path] | None, str]:
    """Map each of the entry's files to a path in ``folder`` (a ``.gz`` file may also be
    present decompressed); ``(None, why)`` when something is missing."""
    if not folder.is_dir():
        return None, "no such folder"
    found: dict[str, Path] = {}
    missing: list[str] = []
    for file in entry.files:
        candidates = [folder / file.name]
        if file.name.endswith(".gz"):
            candidates.append(folder / file.name[:-3])
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            missing.append(file.name)
        else:
            found[file.name] = path
    return (None, f"missing {', '.join(missing)}") if missing else (found, "")


def fetch(entry: CatalogEntry) -> dict[str, Path]:
    """Download (and verify) the entry's files missing from its cache folder."""
    folder = get_settings().cache_dir / entry.name
    paths: dict[str, Path] = {}
    for file in entry.files:
        dest = folder / file.name
        if not dest.is_file():
            download_first(file.urls, dest, file.sha256, file.decompressed)
        paths[file.name] = dest
    return paths


def clear_cache() -> None:
    """Forget datasets loaded in this process."""
    _load.cache_clear()


def _stamp(files: dict[str, Path]) -> Stamp:
    out = []
    for logical, path in sorted(files.items()):
        stat = path.stat()
        out.append((logical, str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    return tuple(out)


@lru_cache(maxsize=4)
def _load(kind: str, name: str, entry: CatalogEntry | None, stamp: Stamp) -> Dataset:
    paths = {logical: Path(path) for logical, path, _, _ in stamp}
    if kind == "imported" or entry is None:
        return store.load_imported(paths[store.META_FILE].parent)
    from kaon.data import formats
    from kaon.data.dataset import Dataset

    folder = next(iter(paths.values())).parent
    if entry.format == "idx":
        splits = {split: formats.read_idx(paths[images], paths[labels])
                  for split, (images, labels) in entry.idx_splits.items()}
    else:
        splits = formats.read_npz(paths[entry.files[0].name])
    for split, data in splits.items():
        if len(data) and int(data.labels.max()) >= len(entry.class_names):
            raise DataError(f"{folder}: split {split} has label {int(data.labels.max())} but "
                            f"{name} has {len(entry.class_names)} classes",
                            hint="the files are not this dataset; replace them")
    return Dataset(name, splits, list(entry.class_names), source=str(folder),
                   meta={"format": entry.format, "origin": "catalog"})


def _fresh(cached: Dataset) -> Dataset:
    """A new Dataset object over the cached tensors, so callers can rebind fields freely."""
    return dataclasses.replace(cached, splits=dict(cached.splits),
                               class_names=list(cached.class_names), meta=dict(cached.meta))
