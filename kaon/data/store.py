"""Imported datasets: detect a user's format, validate, and keep a copy under KAON_HOME/datasets.

Each import is a folder ``<datasets_dir>/<name>/`` holding ``data.npz`` (plain uint8 images and
int64 labels in the MedMNIST key layout, so the npz reader loads it back) and ``meta.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kaon.config import get_settings
from kaon.data import formats
from kaon.data.dataset import Dataset, Split
from kaon.errors import ConfigError, DataError, NotFoundError
from kaon.names import is_valid_name

FORMATS = ("auto", "folder", "npz", "idx", "csv")
DATA_FILE, META_FILE = "data.npz", "meta.json"
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


def import_dataset(path: Path | str | Sequence[Path | str], name: str, format: str = "auto",
                   label_column: str = "label", size: tuple[int, int] | None = None, *,
                   overwrite: bool = False) -> Dataset:
    """Read a dataset in the user's format, validate it and save it as ``name``.

    ``path`` is an image folder, an ``.npz``, a ``.csv``, a folder holding IDX pairs
    (``<prefix>-images-idx3-ubyte[.gz]`` + ``<prefix>-labels-idx1-ubyte[.gz]``), or two IDX
    files (images, labels). ``size`` (H, W) resizes image folders, or gives a CSV's image shape.
    """
    validate_name(name)
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
    target = get_settings().datasets_dir / name
    if target.exists() and not overwrite:
        raise ConfigError(f"a dataset named {name!r} is already imported at {target}",
                          hint="choose another --name, or pass --overwrite to replace it")
    splits, class_names = _read(fmt, paths, label_column, size)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source = ", ".join(str(p.resolve()) for p in paths)
    dataset = Dataset(name, splits, class_names, source=source,
                      meta={"format": fmt, "created_at": created, "origin": "imported"})
    _save(dataset, target)
    return dataset


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
    if fmt == "folder":
        return formats.read_image_folder(paths[0], size=size)
    if fmt == "csv":
        return formats.read_csv(paths[0], label_column=label_column, shape=size)
    if fmt == "npz":
        splits = formats.read_npz(paths[0])
    elif len(paths) == 2:
        splits = {"train": formats.read_idx(*_order_idx_pair(paths))}
    else:
        splits = {split: formats.read_idx(*pair) for split, pair in idx_pairs(paths[0]).items()}
    top = max((int(s.labels.max()) for s in splits.values() if len(s)), default=-1)
    if top < 0:
        raise DataError(f"{paths[0]}: holds no images", hint="check that the right file was given")
    return splits, [str(i) for i in range(top + 1)]


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


def _save(dataset: Dataset, target: Path) -> None:
    """Write ``data.npz`` + ``meta.json`` to a temporary folder, then swap it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.parent / f"{tmp.name}.old"
    try:
        arrays: dict[str, np.ndarray] = {}
        for split, data in dataset.splits.items():
            images = data.images.permute(0, 2, 3, 1).contiguous().numpy()
            arrays[f"{split}_images"] = images[..., 0] if images.shape[-1] == 1 else images
            arrays[f"{split}_labels"] = data.labels.numpy()
        # plain uint8/int64 arrays only, so nothing in the file needs pickle to load
        np.savez(tmp / DATA_FILE, **arrays)  # type: ignore[arg-type]  # stubs: allow_pickle
        meta = {"name": dataset.name, "class_names": dataset.class_names,
                "source": dataset.source, "shape": list(dataset.shape),
                "splits": {k: len(v) for k, v in dataset.splits.items()},
                "counts": dataset.counts(), "content_hash": dataset.content_hash(),
                **dataset.meta}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
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


def list_imported() -> list[dict[str, Any]]:
    """Metadata of every imported dataset, by name; an unreadable one has an ``error`` key."""
    root = get_settings().datasets_dir
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
