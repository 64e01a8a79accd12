"""Resolution by name: imported, then KAON_DATA_PATH, then the cache, then a verified download."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from kaon.config import get_settings, reset_settings
from kaon.data import catalog, import_dataset, list_datasets, load_dataset
from kaon.data.catalog import CatalogEntry, CatalogFile
from kaon.data.resolve import clear_cache
from kaon.errors import ConfigError, DataError, NotFoundError
from tests.data.fixtures import idx_bytes, serve_directory, sha256_of, tiny_images, write_idx
from tests.data.fixtures import write_image_folder as write_folder

TINY = "tiny-digits"
IMAGES, LABELS = tiny_images(12, 5, 5, seed=3), np.arange(12, dtype=np.uint8) % 3
FILES = {"train-images-idx3-ubyte.gz": IMAGES, "train-labels-idx1-ubyte.gz": LABELS}


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"KAON_{key.upper()}", value)
    reset_settings()


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A folder with the tiny dataset's gzipped IDX files, as a mirror would hold them."""
    write_idx(tmp_path / "www", "train", IMAGES, LABELS)
    return tmp_path / "www"


@pytest.fixture
def tiny_entry(www: Path) -> Iterator[CatalogEntry]:
    """A catalog entry whose files are served by a real HTTP server on 127.0.0.1."""
    with serve_directory(www) as url:
        entry = CatalogEntry(
            name=TINY, description="tiny test digits", format="idx",
            files=tuple(CatalogFile(name, sha256_of(idx_bytes(array)), (url + name,),
                                    decompressed=True) for name, array in FILES.items()),
            class_names=("zero", "one", "two"),
            idx_splits={"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")})
        catalog.register(entry)
        try:
            yield entry
        finally:
            catalog.unregister(TINY)


def test_loads_mnist_from_the_data_path(shared_datasets: Path) -> None:
    mnist = load_dataset("mnist")
    assert {k: len(v) for k, v in mnist.splits.items()} == {"train": 60000, "test": 10000}
    assert mnist.class_names == list("0123456789") and mnist.shape == (1, 28, 28)
    assert mnist.source == str(shared_datasets / "mnist")


def test_loads_pneumoniamnist_with_official_counts(shared_datasets: Path) -> None:
    data = load_dataset("pneumoniamnist")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert data.counts()["train"] == {"normal": 1214, "pneumonia": 3494}


def test_repeated_loads_share_cached_tensors(shared_datasets: Path) -> None:
    first, second = load_dataset("mnist"), load_dataset("mnist")
    assert first is not second
    assert first.splits["train"].images is second.splits["train"].images


def test_imported_dataset_is_found_before_the_catalog(tmp_path: Path) -> None:
    import_dataset(write_folder(tmp_path / "mine", {"a": 2, "b": 1}), "mnist")
    mine = load_dataset("mnist")
    assert mine.class_names == ["a", "b"] and len(mine.splits["train"]) == 3


def test_missing_dataset_names_every_place_looked(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "d1", tmp_path / "d2"
    (second / "mnist").mkdir(parents=True)
    (second / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    _settings(monkeypatch, data_path=f"{first}:{second}")
    with pytest.raises(NotFoundError) as info:
        load_dataset("mnist")
    settings, message = get_settings(), info.value.message
    for place in (settings.datasets_dir / "mnist", first / "mnist", second / "mnist",
                  settings.cache_dir / "mnist"):
        assert str(place) in message
    assert "missing train-labels-idx1-ubyte.gz" in message and "KAON_DOWNLOAD=false" in message
    assert "KAON_DATA_PATH" in (info.value.hint or "")
    assert "kaon data import" in (info.value.hint or "")


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(NotFoundError, match="unknown dataset 'cifar-100'") as info:
        load_dataset("cifar-100")
    assert "fashion-mnist" in info.value.message and "breastmnist" in info.value.message
    assert "did you mean" not in (info.value.hint or "")  # nothing close


def test_a_misspelt_name_gets_the_close_one_in_the_hint() -> None:
    with pytest.raises(NotFoundError) as info:
        load_dataset("mnst")
    assert (info.value.hint or "").startswith("did you mean 'mnist'?")


def test_path_like_names_are_rejected_before_any_lookup() -> None:
    with pytest.raises(ConfigError):
        load_dataset("../mnist")


def test_falls_back_to_a_verified_download(tiny_entry: CatalogEntry, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    _settings(monkeypatch, data_path=str(tmp_path / "empty"), download="true")
    data = load_dataset(TINY)
    assert data.class_names == ["zero", "one", "two"]
    assert np.array_equal(data.splits["train"].images[:, 0].numpy(), IMAGES)
    cached = get_settings().cache_dir / TINY
    assert sorted(p.name for p in cached.iterdir()) == sorted(FILES)
    assert data.source == str(cached)


def test_download_is_not_repeated_once_cached(tiny_entry: CatalogEntry, www: Path,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _settings(monkeypatch, data_path="", download="true")
    load_dataset(TINY)
    for file in www.iterdir():
        file.unlink()  # the mirror is now empty: only the cache can answer
    clear_cache()
    _settings(monkeypatch, download="false")
    assert len(load_dataset(TINY).splits["train"]) == 12


def test_download_with_wrong_checksum_fails_and_keeps_only_verified_files(
        tiny_entry: CatalogEntry, www: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (www / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(LABELS[::-1])))
    _settings(monkeypatch, data_path="", download="true")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset(TINY)
    cached = get_settings().cache_dir / TINY
    assert sorted(p.name for p in cached.iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_decompressed_copies_on_the_data_path_are_found(tiny_entry: CatalogEntry,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx(tmp_path / "data" / TINY, "train", IMAGES, LABELS, gz=False)
    _settings(monkeypatch, data_path=str(tmp_path / "data"))
    assert load_dataset(TINY).source == str(tmp_path / "data" / TINY)


def test_changed_files_are_reloaded(tiny_entry: CatalogEntry, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data" / TINY
    write_idx(folder, "train", IMAGES, LABELS)
    _settings(monkeypatch, data_path=str(tmp_path / "data"))
    assert len(load_dataset(TINY).splits["train"]) == 12
    write_idx(folder, "train", IMAGES[:4], LABELS[:4])
    assert len(load_dataset(TINY).splits["train"]) == 4


def test_labels_beyond_the_class_list_are_rejected(tiny_entry: CatalogEntry, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx(tmp_path / "data" / TINY, "train", IMAGES[:2], np.array([0, 7], np.uint8))
    _settings(monkeypatch, data_path=str(tmp_path / "data"))
    with pytest.raises(DataError, match="label 7 but tiny-digits has 3 classes"):
        load_dataset(TINY)


def test_list_datasets_reports_where_each_dataset_is(tmp_path: Path, shared_datasets: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import_dataset(write_folder(tmp_path / "pets", {"cat": 1, "dog": 1}), "pets")
    rows = {row["name"]: row for row in list_datasets()}
    assert rows["pets"]["kind"] == "imported" and rows["pets"]["num_classes"] == 2
    assert rows["mnist"]["status"] == "available"
    assert rows["mnist"]["location"] == str(shared_datasets / "mnist")
    _settings(monkeypatch, data_path="")
    assert {r["name"]: r["status"] for r in list_datasets()}["mnist"] == "missing"
    _settings(monkeypatch, download="true")
    assert {r["name"]: r["status"] for r in list_datasets()}["mnist"] == "downloadable"


def test_loaded_tensors_have_the_documented_types(shared_datasets: Path) -> None:
    split = load_dataset("breastmnist").splits["test"]
    assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
    assert len(split) == 156


def test_a_broken_import_is_listed_as_broken_and_fails_to_load_with_a_hint(
        tmp_path: Path) -> None:
    import_dataset(write_folder(tmp_path / "pets", {"cat": 1, "dog": 1}), "pets")
    (get_settings().datasets_dir / "pets" / "meta.json").write_text("{not json")
    row = next(r for r in list_datasets() if r["name"] == "pets")
    assert row["status"] == "broken" and "meta.json" in row["description"]
    with pytest.raises(DataError, match="unreadable dataset metadata") as info:
        load_dataset("pets")
    assert "--overwrite" in (info.value.hint or "")
