"""Imported datasets: detect a user's format, validate, and keep a copy per workspace.

Each import is a folder ``<root>/<name>/`` holding ``data.npz`` (plain uint8 images and int64
labels in the MedMNIST key layout, so the npz reader loads it back, and the class names as a
string array) and ``meta.json``. The root is ``KAON_HOME/datasets`` for the default workspace
(what ``kaon data import`` fills) and ``KAON_HOME/workspaces/<id>/datasets`` for any other
(what a platform upload fills): one workspace never sees another's.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kaon.config import get_settings
from kaon.data import catalog
from kaon.db.models import DEFAULT_WORKSPACE
from kaon.errors import ConfigError, ConflictError, DataError, NotFoundError
from kaon.names import is_valid_name

if TYPE_CHECKING:  # torch: imported by the functions that read or build images, so that
    # listing and describing imports (`kaon data list`) loads none
    from kaon.data.dataset import Dataset, Split

FORMATS = ("auto", "folder", "npz", "idx", "csv")
DATA_FILE, META_FILE = "data.npz", "meta.json"
CLASS_NAMES_KEY = "class_names"  # optional in an .npz: a string array, one name per label
_IDX_IMAGES = re.compile(r"(?P<prefix>.+)-images-idx3-ubyte(?:\.gz)?")
_SPLIT_WORDS = {"t10k": "test", "test": "test", "val": "val", "valid": "val",
                "validation": "val", "train": "train"}


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe dataset name, else raise :class:`ConfigError`."""
    if not is_valid_name(name):
        raise ConfigError(f"invalid dataset name {name!r}: use 1-64 characters from a-z, 0-9, "
                          "'.', '_' and '-', starting with a letter or digit",
                          hint="for example --name chest-xrays")
    return name


def datasets_root(workspace: str = DEFAULT_WORKSPACE) -> Path:
    """Where ``workspace``'s imported datasets live."""
    settings = get_settings()
    if workspace == DEFAULT_WORKSPACE:
        return settings.datasets_dir
    if not is_valid_name(workspace):
        raise ConfigError(f"invalid workspace id {workspace!r}")
    return settings.home / "workspaces" / workspace / "datasets"


def import_dataset(path: Path | str | Sequence[Path | str], name: str, format: str = "auto",
                   label_column: str = "label", size: tuple[int, int] | None = None, *,
                   overwrite: bool = False, workspace: str = DEFAULT_WORKSPACE,
                   source: str | None = None,
                   admit: Callable[[int], None] | None = None) -> Dataset:
    """Read a dataset in the user's format, validate it and save it as ``name``.

    ``path`` is an image folder, an ``.npz``, a ``.csv``, a folder holding IDX pairs
    (``<prefix>-images-idx3-ubyte[.gz]`` + ``<prefix>-labels-idx1-ubyte[.gz]``), or two IDX
    files (images, labels). ``size`` (H, W) resizes image folders, or gives a CSV's image shape.
    ``source`` is what the metadata says it came from (default: the paths). ``admit`` is
    called with the bytes of the files written, before they take the name: raising there
    (e.g. a full storage quota) keeps nothing and replaces nothing.
    """
    validate_name(name)
    target = datasets_root(workspace) / name
    if target.exists() and not overwrite:
        raise _taken(name)
    splits, class_names, fmt, paths = read_any(path, format, label_column, size)
    return save_read(name, splits, class_names, fmt, paths, overwrite=overwrite,
                     workspace=workspace, source=source, admit=admit)


def save_read(name: str, splits: dict[str, Split], class_names: list[str], fmt: str,
              paths: list[Path], *, overwrite: bool = False,
              workspace: str = DEFAULT_WORKSPACE, source: str | None = None,
              admit: Callable[[int], None] | None = None) -> Dataset:
    """Save what :func:`read_any` read as the imported dataset ``name`` (the second half of
    :func:`import_dataset`, for a caller that looked at the data first)."""
    from kaon.data.dataset import Dataset

    validate_name(name)
    target = datasets_root(workspace) / name
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source = source or ", ".join(str(p.resolve()) for p in paths)
    dataset = Dataset(name, splits, class_names, source=source,
                      meta={"format": fmt, "created_at": created, "origin": "imported"})
    _save(dataset, target, admit, overwrite)
    return dataset


def _taken(name: str) -> ConflictError:
    return ConflictError(f"a dataset named {name!r} already exists",
                         hint="choose another name, or pass --overwrite to replace it")


def dataset_npz(path: Path | str | Sequence[Path | str], format: str = "auto",
                label_column: str = "label", size: tuple[int, int] | None = None) -> bytes:
    """Read and check a dataset in the user's format; return it as one ``.npz`` (plain
    arrays and the class names), as the platform's upload takes it."""
    splits, class_names, _, _ = read_any(path, format, label_column, size)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **_arrays(splits, class_names))  # type: ignore[arg-type]
    return buffer.getvalue()


def read_any(path: Path | str | Sequence[Path | str], format: str = "auto",
             label_column: str = "label", size: tuple[int, int] | None = None,
             ) -> tuple[dict[str, Split], list[str], str, list[Path]]:
    """(splits, class names, format, paths) of a dataset in any format Kaon imports."""
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}", hint=f"use one of {', '.join(FORMATS)}")
    paths = [Path(p).expanduser() for p in
             ([path] if isinstance(path, (str, os.PathLike)) else path)]
    if len(paths) not in (1, 2):
        raise ConfigError(f"expected one path (or an IDX images and labels pair), got {len(paths)}",
                          hint="kaon data import PATH --name NAME")
    for p in paths:
        if not p.exists():
            raise NotFoundError(f"{p}: no such file or folder", hint="check the path")
    fmt = "idx" if len(paths) == 2 else format if format != "auto" else detect_format(paths[0])
    if len(paths) == 2 and format not in ("auto", "idx"):
        raise ConfigError("two paths are only meaningful as an IDX pair",
                          hint="use --format idx, or pass a single path")
    if size is not None and fmt not in ("folder", "csv"):
        raise ConfigError(f"--size applies to image folders and CSV files, not {fmt}",
                          hint="drop --size")
    splits, class_names = _read(fmt, paths, label_column, size)
    _check_two_classes(splits, class_names, paths[0])
    return splits, class_names, fmt, paths


def _check_two_classes(splits: dict[str, Split], class_names: list[str], path: Path) -> None:
    """A classifier learns from training images of two classes at least: refuse a dataset
    without them (an .npz or CSV whose labels are all one value, an IDX folder holding only
    a test pair) at import, not at the first training."""
    train = splits.get("train")
    if train is None or len(train) == 0:
        raise DataError(f"{path}: holds no training images (splits: {', '.join(splits)})",
                        hint="add a train split (an IDX folder: a train-images-idx3-ubyte "
                             "pair beside the t10k one)")
    present = train.labels.unique().tolist()
    if len(present) >= 2:
        return
    raise DataError(f"{path}: only one class ({class_names[present[0]]!r}) has training "
                    "images; a classifier needs at least two",
                    hint="add training images of a second class (an .npz or a CSV: a second "
                         "label value; an image folder: a sub-folder per class, under train/ "
                         "if it has one)")


def detect_format(path: Path) -> str:
    """``folder``, ``idx``, ``npz`` or ``csv`` for one path; :class:`DataError` if unclear."""
    if path.is_dir():
        return "idx" if any(_IDX_IMAGES.fullmatch(p.name) for p in path.iterdir()) else "folder"
    suffix = path.suffix.lower()
    if suffix in (".npz", ".csv"):
        return suffix[1:]
    raise DataError(f"{path}: cannot tell the dataset format from the name",
                    hint="pass --format folder|npz|idx|csv (an IDX pair is two paths or a folder)")


def _read(fmt: str, paths: list[Path], label_column: str,
          size: tuple[int, int] | None) -> tuple[dict[str, Split], list[str]]:
    from kaon.data import formats

    if fmt == "folder":
        return formats.read_image_folder(paths[0], size=size)
    if fmt == "csv":
        return formats.read_csv(paths[0], label_column=label_column, shape=size)
    names: list[str] | None = None
    if fmt == "npz":
        splits = formats.read_npz(paths[0])
        names = _npz_class_names(paths[0])
    elif len(paths) == 2:
        splits = {"train": formats.read_idx(*_order_idx_pair(paths))}
    else:
        splits = {split: formats.read_idx(*pair) for split, pair in idx_pairs(paths[0]).items()}
    top = max((int(s.labels.max()) for s in splits.values() if len(s)), default=-1)
    if top < 0:
        raise DataError(f"{paths[0]}: holds no images", hint="check that the right file was given")
    if names is not None and top >= len(names):
        raise DataError(f"{paths[0]}: label {top} but only {len(names)} class names",
                        hint="give one class name per label, in label order")
    return splits, names or [str(i) for i in range(top + 1)]


def _npz_class_names(path: Path) -> list[str] | None:
    """The optional ``class_names`` array of an .npz (strings only: never a pickle)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if CLASS_NAMES_KEY not in npz.files:
                return None
            names = npz[CLASS_NAMES_KEY]
    except ValueError as exc:  # an object array would need pickle
        raise DataError(f"{path}: class_names must be a plain string array ({exc})",
                        hint="save it as np.array(['cat', 'dog'])") from None
    if names.ndim != 1 or names.dtype.kind not in "US" or not len(names):
        raise DataError(f"{path}: class_names must be a 1-D array of strings",
                        hint="save it as np.array(['cat', 'dog'])")
    return [str(n.decode() if isinstance(n, bytes) else n) for n in names.tolist()]


def _order_idx_pair(paths: list[Path]) -> tuple[Path, Path]:
    first, second = paths
    swapped = "labels" in first.name and "images" in second.name
    return (second, first) if swapped else (first, second)


def idx_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Split name -> (images, labels) for the IDX pairs in ``folder``."""
    pairs: dict[str, tuple[Path, Path]] = {}
    for images in sorted(folder.iterdir()):
        match = _IDX_IMAGES.fullmatch(images.name)
        if not match:
            continue
        prefix = match["prefix"]
        labels = [folder / f"{prefix}-labels-idx1-ubyte{ext}" for ext in ("", ".gz")]
        found = [p for p in labels if p.is_file()]
        if len(found) != 1:
            raise DataError(f"{images}: expected one labels file {labels[0].name}[.gz] beside it, "
                            f"found {len(found)}", hint="keep each images file next to its labels")
        split = _SPLIT_WORDS.get(re.split(r"[-_.]", prefix.lower())[-1], "train")
        if split in pairs:
            raise DataError(f"{folder}: two IDX pairs for split '{split}': {pairs[split][0].name} "
                            f"and {images.name}", hint="keep one pair per split (train, t10k)")
        pairs[split] = (images, found[0])
    return pairs


def _save(dataset: Dataset, target: Path, admit: Callable[[int], None] | None = None,
          overwrite: bool = True) -> None:
    """Write ``data.npz`` + ``meta.json`` to a temporary folder, pass their bytes to
    ``admit``, then swap the folder into place (unless ``overwrite`` is False and another
    import took the name meanwhile)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.parent / f"{tmp.name}.old"
    try:
        arrays = _arrays(dataset.splits, dataset.class_names)
        np.savez(tmp / DATA_FILE, **arrays)  # type: ignore[arg-type]  # stubs: allow_pickle
        meta = {"name": dataset.name, "class_names": dataset.class_names,
                "source": dataset.source, "shape": list(dataset.shape),
                "splits": {k: len(v) for k, v in dataset.splits.items()},
                "counts": dataset.counts(), "content_hash": dataset.content_hash(),
                **dataset.meta}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if admit is not None:
            admit(sum(f.stat().st_size for f in tmp.iterdir()))
        if target.exists() and not overwrite:
            raise _taken(dataset.name)
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if old.exists():
                os.replace(old, target)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _arrays(splits: dict[str, Split], class_names: list[str]) -> dict[str, np.ndarray]:
    """The MedMNIST key layout: plain uint8 / int64 / str arrays, none needing pickle."""
    arrays: dict[str, np.ndarray] = {CLASS_NAMES_KEY: np.array(class_names, dtype=str)}
    for split, data in splits.items():
        images = data.images.permute(0, 2, 3, 1).contiguous().numpy()
        arrays[f"{split}_images"] = images[..., 0] if images.shape[-1] == 1 else images
        arrays[f"{split}_labels"] = data.labels.numpy()
    return arrays


def read_meta(folder: Path) -> dict[str, Any]:
    """The ``meta.json`` of an imported dataset."""
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable dataset metadata ({exc})",
                        hint=f"re-import with `kaon data import PATH --name {folder.name} "
                             "--overwrite`") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("class_names"), list):
        raise DataError(f"{path}: metadata lacks class_names",
                        hint=f"re-import with --name {folder.name} --overwrite")
    return meta


def load_imported(folder: Path) -> Dataset:
    """Load an imported dataset from its folder."""
    from kaon.data import formats
    from kaon.data.dataset import Dataset

    meta = read_meta(folder)
    splits = formats.read_npz(folder / DATA_FILE)
    class_names = [str(c) for c in meta["class_names"]]
    for split, data in splits.items():
        if len(data) and int(data.labels.max()) >= len(class_names):
            raise DataError(f"{folder / DATA_FILE}: split {split} has label "
                            f"{int(data.labels.max())} but only {len(class_names)} classes",
                            hint=f"re-import with --name {folder.name} --overwrite")
    keys = ("format", "created_at", "origin")
    meta_strings: dict[str, str] = {k: str(meta[k]) for k in keys if k in meta}
    return Dataset(folder.name, splits, class_names, source=str(meta.get("source", "")),
                   meta=meta_strings)


def delete_dataset(name: str, workspace: str = DEFAULT_WORKSPACE) -> None:
    """Remove an imported dataset of ``workspace`` (a catalog dataset cannot be deleted)."""
    folder = imported_folder(name, workspace)
    trash = Path(tempfile.mkdtemp(prefix=f".{name}.deleted.", dir=folder.parent))
    os.replace(folder, trash)  # one rename onto the empty folder: never half a dataset left
    shutil.rmtree(trash, ignore_errors=True)


def imported_folder(name: str, workspace: str = DEFAULT_WORKSPACE) -> Path:
    """The folder of ``workspace``'s imported dataset ``name``; NotFoundError (which says
    when it is a catalog dataset, read-only) if there is none."""
    validate_name(name)
    folder = datasets_root(workspace) / name
    if not (folder / META_FILE).is_file():
        where = " (it is in the shared catalog, which is read-only)" if catalog.find(name) \
            else ""
        raise NotFoundError(f"No dataset {name!r} of this workspace to delete{where}.",
                            hint="List them with `kaon data list` (this machine) or "
                                 "`kaon datasets list` (the platform).")
    return folder


def list_imported(workspace: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
    """Metadata of every imported dataset, by name; an unreadable one has an ``error`` key."""
    root = datasets_root(workspace)
    if not root.is_dir():
        return []
    rows: list[dict[str, Any]] = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / META_FILE).is_file():
            try:
                meta = read_meta(folder)
            except DataError as exc:
                meta = {"class_names": [], "error": exc.message}
            rows.append(meta | {"name": folder.name, "location": str(folder)})
    return rows
