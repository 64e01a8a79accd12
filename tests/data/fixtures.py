"""Small data files written into tmp_path, and a real HTTP server on loopback."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image


def tiny_images(n: int, height: int = 4, width: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` random uint8 images shaped (n, height, width)."""
    return np.random.default_rng(seed).integers(0, 256, (n, height, width), dtype=np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array (magic 0x0000080D, D = number of dimensions)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
              gz: bool = True) -> tuple[Path, Path]:
    """Write ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    paths = (folder / f"{prefix}-images-idx3-ubyte{ext}",
             folder / f"{prefix}-labels-idx1-ubyte{ext}")
    for path, array in zip(paths, (images, labels), strict=True):
        raw = idx_bytes(array)
        path.write_bytes(gzip.compress(raw) if gz else raw)
    return paths


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_image(path: Path, size: tuple[int, int] = (8, 8), mode: str = "L",
                value: int = 128) -> Path:
    """A solid image of ``size`` (H, W) in Pillow ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, ...] = value if mode == "L" else (value, 255 - value, 0)
    Image.new(mode, (size[1], size[0]), color).save(path)
    return path


def write_image_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (8, 8),
                       mode: str = "L") -> Path:
    """``root/<class>/<i>.png`` with ``counts[class]`` images per class."""
    for c, (cls, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            write_image(root / cls / f"{i}.png", size, mode, value=40 * c + i)
    return root


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
