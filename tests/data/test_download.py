"""Download-and-verify against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from kaon.data import download as dl
from kaon.data import formats
from kaon.errors import DataError
from tests.data.fixtures import idx_bytes, serve_directory, sha256_of, tiny_images

RAW = idx_bytes(tiny_images(20, 6, 6))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP holding ``images.gz`` (a gzipped IDX file)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "images.gz").write_bytes(gzip.compress(RAW))
    with serve_directory(root) as url:
        yield url, root


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_the_file_bytes(served: tuple[str, Path], tmp_path: Path) -> None:
    url, root = served
    dest = tmp_path / "out" / "images.gz"
    digest = sha256_of((root / "images.gz").read_bytes())
    assert dl.download(url + "images.gz", dest, digest) == dest
    assert dest.read_bytes() == (root / "images.gz").read_bytes()
    assert _leftovers(dest.parent) == ["images.gz"]


def test_download_verifies_decompressed_bytes(served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    dest = dl.download(url + "images.gz", tmp_path / "images.gz", sha256_of(RAW),
                       decompressed=True)
    assert formats.read_bytes(dest) == RAW


def test_a_server_that_sends_decompressed_bytes_still_yields_a_gzip_file(
        served: tuple[str, Path], tmp_path: Path) -> None:
    url, root = served
    (root / "plain.gz").write_bytes(RAW)  # as when a server decodes Content-Encoding: gzip
    dest = dl.download(url + "plain.gz", tmp_path / "images.gz", sha256_of(RAW),
                       decompressed=True)
    assert gzip.decompress(dest.read_bytes()) == RAW
    assert _leftovers(tmp_path) == ["images.gz", "www"]


def test_checksum_mismatch_names_both_hashes_and_removes_the_file(
        served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    dest = tmp_path / "out" / "images.gz"
    wrong = "ab" * 32
    with pytest.raises(DataError) as info:
        dl.download(url + "images.gz", dest, wrong, decompressed=True)
    assert wrong in info.value.message and sha256_of(RAW) in info.value.message
    assert "checksum mismatch" in info.value.message and info.value.hint
    assert _leftovers(dest.parent) == []


def test_http_error_is_a_data_error_with_the_status(served: tuple[str, Path],
                                                    tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(DataError, match="HTTP 404"):
        dl.download(url + "missing.gz", tmp_path / "missing.gz", "0" * 64)
    assert _leftovers(tmp_path) == ["www"]


def test_unreachable_server_is_a_data_error(tmp_path: Path) -> None:
    with serve_directory(tmp_path) as url:
        pass  # the server is gone now, its port closed
    with pytest.raises(DataError, match="failed") as info:
        dl.download(url + "x.gz", tmp_path / "x.gz", "0" * 64, timeout=5)
    assert "KAON_DATA_PATH" in (info.value.hint or "")


def test_download_larger_than_the_limit_is_refused(served: tuple[str, Path],
                                                   tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(DataError, match="byte limit"):
        dl.download(url + "images.gz", tmp_path / "big.gz", "0" * 64, max_bytes=10)
    assert not (tmp_path / "big.gz").exists()


def test_download_first_falls_back_to_the_next_mirror(served: tuple[str, Path],
                                                      tmp_path: Path) -> None:
    url, _ = served
    dest = dl.download_first([url + "gone.gz", url + "images.gz"], tmp_path / "images.gz",
                             sha256_of(RAW), decompressed=True)
    assert dest.is_file()


def test_download_first_lists_every_failed_mirror(served: tuple[str, Path],
                                                  tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(DataError, match="every mirror") as info:
        dl.download_first([url + "a.gz", url + "b.gz"], tmp_path / "x.gz", "0" * 64)
    assert "a.gz" in info.value.message and "b.gz" in info.value.message


def test_progress_bar_appears_on_a_terminal_for_slow_downloads(
        served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = served
    (root / "blob.bin").write_bytes(np.random.default_rng(1).bytes(3 * dl.CHUNK))
    screen = io.StringIO()
    monkeypatch.setattr(dl, "_console", Console(file=screen, force_terminal=True, width=100))
    monkeypatch.setattr(dl, "PROGRESS_AFTER_S", 0.0)
    dl.download(url + "blob.bin", tmp_path / "blob.bin",
                sha256_of((root / "blob.bin").read_bytes()))
    assert "downloading blob.bin" in screen.getvalue()
