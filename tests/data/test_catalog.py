"""The named catalog: built-in entries, their checksums against the shared copies, registration."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import pytest

from kaon.data import catalog
from kaon.data.catalog import CatalogEntry, CatalogFile
from kaon.errors import NotFoundError


def test_catalog_holds_the_four_builtin_datasets() -> None:
    assert {"mnist", "fashion-mnist", "pneumoniamnist", "breastmnist"} <= set(catalog.names())


def test_builtin_class_names() -> None:
    assert catalog.get("mnist").class_names == tuple("0123456789")
    fashion = catalog.get("fashion-mnist").class_names
    assert fashion[0] == "T-shirt/top" and fashion[9] == "Ankle boot" and len(fashion) == 10
    assert catalog.get("pneumoniamnist").class_names == ("normal", "pneumonia")
    assert catalog.get("breastmnist").class_names == ("malignant", "normal/benign")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "pneumoniamnist", "breastmnist"])
def test_every_builtin_file_has_a_sha256_and_an_https_or_http_url(name: str) -> None:
    for file in catalog.get(name).files:
        assert re.fullmatch(r"[0-9a-f]{64}", file.sha256), file.name
        assert file.urls and all(u.startswith(("https://", "http://")) for u in file.urls)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_checksums_match_the_decompressed_shared_files(name: str,
                                                          shared_datasets: Path) -> None:
    for file in catalog.get(name).files:
        assert file.decompressed
        data = gzip.decompress((shared_datasets / name / file.name).read_bytes())
        assert hashlib.sha256(data).hexdigest() == file.sha256, file.name


@pytest.mark.parametrize("name", ["pneumoniamnist", "breastmnist"])
def test_npz_checksums_match_the_shared_files(name: str, shared_datasets: Path) -> None:
    (file,) = catalog.get(name).files
    assert not file.decompressed
    digest = hashlib.sha256((shared_datasets / name / file.name).read_bytes()).hexdigest()
    assert digest == file.sha256


def test_unknown_name_lists_the_known_names() -> None:
    with pytest.raises(NotFoundError, match="no catalog dataset named 'cifar'") as info:
        catalog.get("cifar")
    assert "mnist" in info.value.message and "pneumoniamnist" in info.value.message
    assert "kaon data import" in (info.value.hint or "")


def _entry(name: str) -> CatalogEntry:
    return CatalogEntry(name=name, description="test", format="npz",
                        files=(CatalogFile("x.npz", "0" * 64, ("http://127.0.0.1/x.npz",)),),
                        class_names=("a", "b"))


def test_register_adds_an_entry_and_unregister_removes_it() -> None:
    entry = catalog.register(_entry("extra-test"))
    try:
        assert catalog.get("extra-test") is entry
        assert "extra-test" in catalog.names()
    finally:
        catalog.unregister("extra-test")
    assert catalog.find("extra-test") is None


def test_register_refuses_to_replace_silently() -> None:
    with pytest.raises(ValueError, match="already has an entry named 'mnist'"):
        catalog.register(_entry("mnist"))
    assert catalog.get("mnist").format == "idx"


def test_register_checks_idx_splits_name_the_entry_files() -> None:
    bad = CatalogEntry(name="bad-idx", description="", format="idx",
                       files=(CatalogFile("a.gz", "0" * 64, ("http://x/a.gz",)),),
                       class_names=("a",), idx_splits={"train": ("a.gz", "b.gz")})
    with pytest.raises(ValueError, match="idx split files"):
        catalog.register(bad)
    assert catalog.find("bad-idx") is None
