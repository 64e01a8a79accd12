"""Readers for the formats datasets arrive in: IDX, MedMNIST-style npz, image folders and CSV.

Every reader returns uint8 images shaped (N, C, H, W) with int64 labels shaped (N,), and raises
:class:`~kaon.errors.DataError` naming the file and saying what is wrong with it.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from kaon.data.dataset import Split
from kaon.data.folder import SPLITS, read_folder
from kaon.errors import DataError

MAX_CLASSES = 10_000  # labels are class indices; a label of 2**62 must not build 2**62 names

__all__ = [
    "SPLITS",
    "Labelled",
    "make_split",
    "read_bytes",
    "read_csv",
    "read_idx",
    "read_image_folder",
    "read_npz",
]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
MAX_DECOMPRESSED_BYTES = 4 << 30
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


MAX_NPZ_BYTES = 8 * 1024**3  # decompressed; a zip bomb is refused before reading


class Labelled(NamedTuple):
    """Splits plus the class names the reader found (image folders and CSV name their classes)."""

    splits: dict[str, Split]
    class_names: list[str]


def read_image_folder(path: Path, size: tuple[int, int] | None = None,
                      channels: int | None = None) -> Labelled:
    """Read one sub-folder per class (optionally under train/, val/, test/); see
    :func:`kaon.data.folder.read_folder`. ``size`` is (H, W); ``channels`` 1, 3 or 4."""
    return Labelled(*read_folder(Path(path), size=size, channels=channels))


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by ``.gz`` suffix or by magic number)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})",
                        hint="check that the path exists and is readable") from exc
    if raw[:2] != _GZIP_MAGIC:
        if path.suffix == ".gz":
            raise DataError(f"{path}: bad gzip file (no gzip header)",
                            hint="the file is corrupt; download it again, or decompress it "
                                 "yourself and drop the .gz suffix")
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(MAX_DECOMPRESSED_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: bad gzip data ({exc})",
                        hint="the file is corrupt or truncated; download it again") from exc
    if len(data) > MAX_DECOMPRESSED_BYTES:
        raise DataError(f"{path}: decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes",
                        hint="this is not a dataset Kaon can hold in memory")
    return data


def _read_idx_array(path: Path, magic: int, what: str) -> np.ndarray:
    data = read_bytes(path)
    hint = "the file is truncated or is not an IDX file; download it again"
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file: expected at least 4 bytes, got {len(data)}",
                        hint=hint)
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: bad magic number {found}, expected {magic} for IDX {what}",
                        hint="check that images and labels files are not swapped and that the "
                             "file is an (optionally gzipped) IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header: expected {header} bytes, got {len(data)}",
                        hint=hint)
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing bytes"
        raise DataError(f"{path}: {problem}: dims {dims} need {expected} bytes, got {len(data)}",
                        hint=hint)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(images_path: Path, labels_path: Path) -> Split:
    """Read an IDX pair (plain or gzipped), the canonical MNIST format, as one split."""
    images = _read_idx_array(Path(images_path), IDX_IMAGES_MAGIC, "images")
    labels = _read_idx_array(Path(labels_path), IDX_LABELS_MAGIC, "labels")
    if len(images) != len(labels):
        raise DataError(f"label count mismatch: {images_path} holds {len(images)} images but "
                        f"{labels_path} holds {len(labels)} labels",
                        hint="pair each images file with the labels file of the same split")
    return Split(torch.from_numpy(images.copy()).unsqueeze(1),
                 torch.from_numpy(labels.astype(np.int64)))


def check_label_bound(where: str, top: int, hint: str) -> None:
    """Refuse a largest label that would mean more than :data:`MAX_CLASSES` classes."""
    if top >= MAX_CLASSES:
        raise DataError(f"{where}: label {top} means over {MAX_CLASSES:,} classes", hint=hint)


def make_split(where: str, images: np.ndarray, labels: np.ndarray) -> Split:
    """Validate and convert arrays: images (N,H,W) or channels-last (N,H,W,C), C in 1, 3, 4."""
    if images.dtype != np.uint8:
        in_range = images.size == 0 or (images.min() >= 0 and images.max() <= 255)
        if images.dtype.kind not in "iu" or not in_range:
            raise DataError(f"{where}: images are {images.dtype}, expected uint8 pixels 0-255",
                            hint="scale to 0-255 and cast to uint8 before saving")
        images = images.astype(np.uint8)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3, 4):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{where}: images shaped {images.shape}, expected (N,H,W) or (N,H,W,C)",
                        hint="save one image per row of the first axis")
    if 0 in images.shape[2:]:
        raise DataError(f"{where}: images of {images.shape[2]}x{images.shape[3]} pixels hold "
                        "nothing", hint="each image needs at least one pixel")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{where}: labels are {labels.dtype} shaped {labels.shape}, expected "
                        "integers shaped (N,) or (N,1)",
                        hint="multi-label and float labels are not supported; save class indices")
    if labels.size and labels.min() < 0:
        raise DataError(f"{where}: negative label {int(labels.min())}",
                        hint="labels are class indices 0..K-1")
    if labels.size:  # also before int64 could wrap it
        check_label_bound(where, int(labels.max()), "labels are class indices 0..K-1")
    if len(images) != len(labels):
        raise DataError(f"{where}: label count mismatch: {len(images)} images but "
                        f"{len(labels)} labels", hint="save exactly one label per image")
    return Split(torch.from_numpy(np.ascontiguousarray(images)),
                 torch.from_numpy(labels.astype(np.int64)))


def _check_declared_sizes(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse an array whose .npy header declares more bytes than its entry holds: numpy
    would allocate what the header says (a 600-byte file can ask for terabytes)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        with archive.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
                if version not in readers:
                    raise ValueError(f"format version {version}")
                shape, _, dtype = readers[version](f)
            except ValueError as exc:
                raise DataError(f"{path}: {info.filename} has no valid .npy header ({exc})",
                                hint="re-save it with numpy.savez") from None
            declared = math.prod(shape) * dtype.itemsize
            if declared > info.file_size:
                raise DataError(f"{path}: {info.filename} declares shape {shape} "
                                f"({declared:,} bytes) but holds {info.file_size:,}",
                                hint="the file is corrupt or crafted; re-create it") from None


def read_npz(path: Path) -> dict[str, Split]:
    """Read a MedMNIST-layout npz (``train_images``, ``train_labels``, ``val_*``, ``test_*``)."""
    path = Path(path)
    layout_hint = ("a dataset .npz holds train_images and train_labels, and optionally "
                   "val_images/val_labels and test_images/test_labels")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})",
                        hint="check that the path exists and is readable") from exc
    if magic not in _ZIP_MAGICS:
        raise DataError(f"{path}: not an .npz archive (no zip header)", hint=layout_hint)
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            _check_declared_sizes(path, archive)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: the .npz archive is corrupt or truncated ({exc})",
                        hint=layout_hint) from None
    if unpacked > MAX_NPZ_BYTES:
        raise DataError(f"{path}: unpacks to {unpacked:,} bytes, over the {MAX_NPZ_BYTES:,}-byte "
                        "limit", hint="split the data into several datasets")
    splits: dict[str, Split] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            for split in SPLITS:
                wanted = (f"{split}_images", f"{split}_labels")
                if split != "train" and not keys.intersection(wanted):
                    continue
                for key in wanted:
                    if key not in keys:
                        raise DataError(f"{path}: missing npz key '{key}' "
                                        f"(found: {', '.join(sorted(keys)) or 'none'})",
                                        hint=layout_hint)
                splits[split] = make_split(f"{path} [{split}]", npz[wanted[0]], npz[wanted[1]])
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path}: holds pickled object arrays, which Kaon refuses to load",
                            hint="re-save plain arrays: uint8 images and integer labels") from exc
        raise DataError(f"{path}: corrupt array ({exc})", hint="re-create the file") from exc
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated .npz ({exc})",
                        hint="download or re-create the file") from exc
    shapes = {tuple(s.images.shape[1:]) for s in splits.values()}
    if len(shapes) > 1:
        raise DataError(f"{path}: splits have different image shapes {sorted(shapes)}",
                        hint="every split must hold images of the same (C,H,W)")
    return splits


def read_csv(path: Path, label_column: str = "label",
             shape: Sequence[int] | None = None) -> Labelled:
    """Read a CSV with one image per row: a label column plus pixel columns 0-255.

    Labels may be integers (class names "0".."K-1") or strings (class names sorted). ``shape``
    is (H, W) or (C, H, W); without it the image is taken as square, one channel.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8" has a BOM
            rows = [row for row in csv.reader(fh) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})",
                        hint="save the file as UTF-8 CSV with a header row") from exc
    if len(rows) < 2:
        raise DataError(f"{path}: no data rows", hint="one header row, then one row per image")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(f"{path}: no '{label_column}' column (columns: {', '.join(header[:5])}"
                        f"{', ...' if len(header) > 5 else ''})",
                        hint="pass the label column's name (--label-column NAME)")
    li = header.index(label_column)
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {lineno}: {len(row)} fields, expected {len(header)}",
                            hint="every row needs a label and the same number of pixels")
    table = np.array(rows[1:], dtype=str)
    raw_labels = np.char.strip(table[:, li])
    pixels_text = np.delete(table, li, axis=1)
    try:
        pixels = pixels_text.astype(np.int64)
    except (ValueError, OverflowError):
        pixels = _locate_bad_pixel(path, pixels_text)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        bad = np.argwhere((pixels < 0) | (pixels > 255))[0]
        raise DataError(f"{path}, line {bad[0] + 2}: pixel {pixels[tuple(bad)]} outside 0-255",
                        hint="pixels must be integers 0-255")
    labels, class_names = _encode_labels(path, raw_labels)
    chw = _csv_shape(path, pixels.shape[1], shape)
    images = pixels.astype(np.uint8).reshape(len(pixels), *chw).transpose(0, 2, 3, 1)
    return Labelled({"train": make_split(str(path), images, labels)}, class_names)


def _locate_bad_pixel(path: Path, cells: np.ndarray) -> np.ndarray:
    for (row, col), cell in np.ndenumerate(cells):
        try:
            if not 0 <= int(cell) <= 255:
                raise ValueError
        except ValueError:
            raise DataError(f"{path}, line {row + 2}: pixel column {col + 1} holds "
                            f"{str(cell)[:40]!r}, not an integer 0-255",
                            hint="pixels must be integers 0-255") from None
    raise AssertionError("unreachable: every cell parsed")


def _encode_labels(path: Path, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
    if (raw == "").any():
        line = int(np.argmax(raw == "")) + 2
        raise DataError(f"{path}, line {line}: empty label", hint="give every row a label")
    try:
        ints = raw.astype(np.int64)
    except (ValueError, OverflowError):
        class_names = sorted(set(raw.tolist()))
        if len(class_names) > MAX_CLASSES:
            raise DataError(f"{path}: {len(class_names):,} distinct labels, over "
                            f"{MAX_CLASSES:,} classes", hint="is the label column right?") from None
        return np.searchsorted(np.array(class_names), raw).astype(np.int64), class_names
    if ints.min() < 0:
        raise DataError(f"{path}: negative label {int(ints.min())}",
                        hint="integer labels are class indices 0..K-1; or use class names")
    # K names would be built: a label of 10**11 must not
    check_label_bound(str(path), int(ints.max()),
                      "integer labels are class indices 0..K-1; or use class names")
    return ints, [str(i) for i in range(int(ints.max()) + 1)]


def _csv_shape(path: Path, n: int, shape: Sequence[int] | None) -> tuple[int, int, int]:
    if shape is None:
        side = math.isqrt(n)
        if side * side != n:
            raise DataError(f"{path}: {n} pixel columns do not make a square image",
                            hint="pass the image shape (--size HxW, or shape=(H, W))")
        return 1, side, side
    dims = (1, *shape) if len(shape) == 2 else tuple(shape)
    if len(dims) != 3 or math.prod(dims) != n or dims[0] not in (1, 3, 4):
        raise DataError(f"{path}: shape {tuple(shape)} does not fit {n} pixel columns",
                        hint="shape is (H, W) or (C, H, W), C in 1, 3, 4, with a product equal "
                             "to the number of pixel columns")
    return int(dims[0]), int(dims[1]), int(dims[2])
