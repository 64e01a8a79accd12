"""Download-and-verify: stream a URL to a temporary file, check its SHA-256, then rename it.

A file that fails verification never appears at its destination. Downloads are bounded in size,
and a progress bar appears on a terminal when a download takes more than a moment.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kaon.errors import DataError

MAX_BYTES = 2 << 30
PROGRESS_AFTER_S = 0.5
CHUNK = 1 << 20
# No browser User-Agent (Zenodo refuses scripts that claim to be browsers); identity encoding so
# the bytes stored are the bytes the checksum describes.
HEADERS = {"User-Agent": "kaon-data/0.1", "Accept-Encoding": "identity"}
_console = Console(stderr=True)


def download(url: str, dest: Path, sha256: str, decompressed: bool = False, *,
             max_bytes: int = MAX_BYTES, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and verify it, returning ``dest``.

    ``sha256`` is the expected hex digest of the file, or of its gunzipped bytes when
    ``decompressed`` is true. The bytes go to a temporary file beside ``dest`` that is renamed
    into place only once verified; on any failure it is removed and a :class:`DataError` says
    why (a mismatch names the expected and actual digests).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, dest.name, max_bytes, timeout)
        packed = decompressed and _is_gzip(tmp)
        if packed:
            digest = _gunzipped_sha256(tmp, url, max_bytes * 16)
        if digest != sha256.lower():
            what = "decompressed bytes" if decompressed else "bytes"
            raise DataError(f"checksum mismatch for {url}: expected SHA-256 {sha256.lower()} of "
                            f"the {what}, got {digest}; the download was deleted",
                            hint="the server sent different bytes (a changed or corrupt file); "
                                 "retry later, or put a verified copy on KAON_DATA_PATH")
        if decompressed and not packed and dest.suffix == ".gz":
            _gzip_in_place(tmp)  # the server sent it decompressed; store what the name says
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".gz").unlink(missing_ok=True)
        raise
    return dest


def download_first(urls: Sequence[str], dest: Path, sha256: str, decompressed: bool = False,
                   *, max_bytes: int = MAX_BYTES, timeout: float = 60.0) -> Path:
    """Try each mirror in turn; the error lists every URL's failure when all of them fail."""
    failures: list[DataError] = []
    for url in urls:
        try:
            return download(url, dest, sha256, decompressed, max_bytes=max_bytes, timeout=timeout)
        except DataError as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    raise DataError(f"every mirror of {dest.name} failed:\n"
                    + "\n".join(f"  - {exc.message}" for exc in failures),
                    hint=failures[-1].hint if failures else "the entry lists no URL")


def _fetch(url: str, out: BinaryIO, label: str, max_bytes: int, timeout: float) -> str:
    """Stream ``url`` into ``out``; return the SHA-256 of the bytes written."""
    hint = "check the network connection, or put the files in a folder on KAON_DATA_PATH"
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout,
                          headers=HEADERS) as response:
            if response.status_code != 200:
                raise DataError(f"download of {url} failed: HTTP {response.status_code}",
                                hint=hint)
            length = int(response.headers.get("Content-Length") or 0) or None
            if length and length > max_bytes:
                raise DataError(f"download of {url} refused: {length} bytes exceeds the "
                                f"{max_bytes}-byte limit", hint="raise max_bytes if expected")
            received = 0
            with _LazyProgress(label, length) as progress:
                for chunk in response.iter_bytes(CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise DataError(f"download of {url} stopped: more than {max_bytes} bytes",
                                        hint="raise max_bytes if the file really is that big")
                    digest.update(chunk)
                    out.write(chunk)
                    progress.advance(received)
    except httpx.HTTPError as exc:
        raise DataError(f"download of {url} failed ({type(exc).__name__}: {exc})",
                        hint=hint) from exc
    return digest.hexdigest()


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _gzip_in_place(path: Path) -> None:
    packed = path.with_name(path.name + ".gz")
    with path.open("rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, CHUNK)
    os.replace(packed, path)


def _gunzipped_sha256(path: Path, url: str, limit: int) -> str:
    digest = hashlib.sha256()
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise DataError(f"{url}: decompresses to more than {limit} bytes",
                                    hint="the file is not the dataset it claims to be")
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"download of {url} is not valid gzip ({exc}); it was deleted",
                        hint="retry later, or put a verified copy on KAON_DATA_PATH") from exc
    return digest.hexdigest()


class _LazyProgress:
    """A rich progress bar that appears only after :data:`PROGRESS_AFTER_S` on a terminal."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> _LazyProgress:
        return self

    def advance(self, completed: int) -> None:
        if self.progress is None:
            if time.monotonic() - self.started < PROGRESS_AFTER_S or not _console.is_terminal:
                return
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(),
                                     TimeRemainingColumn(), console=_console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(f"downloading {self.label}", total=self.total)
        assert self.task is not None
        self.progress.update(self.task, completed=completed)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
