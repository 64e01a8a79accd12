"""The image-folder reader: one sub-folder per class, optionally under train/, val/ and test/.

Kept apart from :mod:`kaon.data.formats` (which re-exports it as ``read_image_folder``) because
walking folders and decoding images with Pillow is its own small idea.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from kaon.data.dataset import Split
from kaon.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_MODE_FOR_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}
_LAYOUT_HINT = "put each class's images in its own sub-folder: ROOT/cat/1.png, ROOT/dog/2.png"


def read_folder(root: Path, size: tuple[int, int] | None = None,
                channels: int | None = None) -> tuple[dict[str, Split], list[str]]:
    """Read an image folder into splits and class names (sorted sub-folder names).

    If ``root`` holds a ``train/`` folder, each of ``train/``, ``val/`` and ``test/`` is a split;
    otherwise every image goes to ``train``. ``size`` is (H, W) to resize every image to; without
    it all images must share one size. ``channels`` (1, 3 or 4) defaults to 1 when every image
    is greyscale, else 3.
    """
    if channels is not None and channels not in _MODE_FOR_CHANNELS:
        raise ConfigError(f"channels must be 1, 3 or 4, got {channels}",
                          hint="1 for greyscale, 3 for RGB, 4 for RGBA")
    files = _collect(root)
    class_names = sorted({cls for per_class in files.values() for cls in per_class})
    if not class_names:
        raise DataError(f"{root}: no class sub-folders with images found", hint=_LAYOUT_HINT)
    if len(class_names) == 1:
        raise DataError(f"{root}: only one class ('{class_names[0]}') found; a classifier "
                        "needs at least two", hint=_LAYOUT_HINT)
    headers = {path: _header(path) for per_class in files.values()
               for paths in per_class.values() for path in paths}
    if channels is None:
        channels = 1 if all(mode in GREY_MODES for mode, _ in headers.values()) else 3
    height, width = size if size is not None else _common_size(headers)
    splits: dict[str, Split] = {}
    for split, per_class in files.items():
        paths = [p for cls in class_names for p in per_class.get(cls, [])]
        labels = [i for i, cls in enumerate(class_names) for _ in per_class.get(cls, [])]
        images = np.empty((len(paths), channels, height, width), dtype=np.uint8)
        for i, path in enumerate(paths):
            images[i] = _decode(path, _MODE_FOR_CHANNELS[channels], (height, width))
        splits[split] = Split(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64))
    return splits, class_names


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _collect(root: Path) -> dict[str, dict[str, list[Path]]]:
    """split -> class name -> image files; raises when the layout is not usable."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder", hint="pass a folder with one sub-folder per class")
    names = {p.name for p in _subfolders(root)}
    if "train" in names:
        unexpected = names - set(SPLITS)
        if unexpected:
            raise DataError(f"{root}: has train/, so every sub-folder must be train/, val/ or "
                            f"test/, but found {', '.join(sorted(unexpected))}/",
                            hint="move class folders under train/ (and val/, test/)")
        layout = {split: root / split for split in SPLITS if split in names}
    else:
        layout = {"train": root}
    files: dict[str, dict[str, list[Path]]] = {}
    for split, folder in layout.items():
        per_class = {d.name: sorted(f for f in d.iterdir() if f.is_file()
                                    and f.suffix.lower() in IMAGE_SUFFIXES
                                    and not f.name.startswith("."))
                     for d in _subfolders(folder)}
        if per_class and not any(per_class.values()):
            raise DataError(f"{folder}: class folders hold no images "
                            f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})", hint=_LAYOUT_HINT)
        files[split] = {cls: paths for cls, paths in per_class.items() if paths}
    return files


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (H, W)) from the image header, without decoding pixels."""
    try:
        with Image.open(path) as image:
            return image.mode, (image.height, image.width)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})",
                        hint="remove or re-save the file") from exc


def _common_size(headers: dict[Path, tuple[str, tuple[int, int]]]) -> tuple[int, int]:
    first, (_, size) = next(iter(headers.items()))
    for path, (_, other) in headers.items():
        if other != size:
            raise DataError(f"images differ in size: {first} is {size[0]}x{size[1]} but {path} "
                            f"is {other[0]}x{other[1]} (HxW)",
                            hint="pass a size to resize every image, e.g. --size 28x28 "
                                 "(size=(28, 28) in Python)")
    return size


def _decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Pixels as (C, H, W) uint8, converted to ``mode`` and resized to ``size`` (H, W)."""
    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
        if (image.height, image.width) != size:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode the image ({exc})",
                        hint="the file is corrupt or truncated; remove or re-save it") from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
