"""Imports of user data: format detection, validation, the saved copy, names and overwrites."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from kaon.config import get_settings
from kaon.data import import_dataset, list_datasets, load_dataset, store
from kaon.errors import ConfigError, ConflictError, DataError, NotFoundError
from tests.data.fixtures import tiny_images, write_idx, write_image_folder


@pytest.mark.parametrize("bad", ["../x", "x; drop table datasets", "", "Upper", "-lead", "a/b",
                                 ".hidden", "x" * 65, "name\n"])
def test_validate_name_rejects_unsafe_names(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid dataset name") as info:
        store.validate_name(bad)
    assert info.value.hint


@pytest.mark.parametrize("good", ["mnist", "chest-xrays.v2", "a", "x_1", "9" * 64])
def test_validate_name_accepts_safe_names(good: str) -> None:
    assert store.validate_name(good) == good


def test_import_with_a_bad_name_writes_nothing(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", {"cat": 1, "dog": 1})
    with pytest.raises(ConfigError):
        import_dataset(root, "../escape")
    assert not get_settings().datasets_dir.exists()
    assert not (get_settings().home / "escape").exists()


def test_import_image_folder_saves_plain_arrays_and_metadata(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", {"cat": 3, "dog": 2})
    dataset = import_dataset(root, "pets")
    assert dataset.class_names == ["cat", "dog"] and dataset.shape == (1, 8, 8)
    folder = get_settings().datasets_dir / "pets"
    with np.load(folder / "data.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["class_names", "train_images", "train_labels"]
        assert npz["class_names"].tolist() == ["cat", "dog"]  # a string array: no pickle
        assert npz["train_images"].dtype == np.uint8 and npz["train_images"].shape == (5, 8, 8)
        assert npz["train_labels"].dtype == np.int64
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["class_names"] == ["cat", "dog"] and meta["format"] == "folder"
    assert meta["source"] == str(root.resolve())
    assert datetime.fromisoformat(meta["created_at"]).utcoffset() == timedelta(0)
    assert meta["counts"] == {"train": {"cat": 3, "dog": 2}}


def test_import_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    import_dataset(write_image_folder(tmp_path / "v1", {"a": 1, "b": 1}), "pets")
    v2 = write_image_folder(tmp_path / "v2", {"a": 2, "b": 2, "c": 2})
    with pytest.raises(ConflictError, match="already exists") as info:
        import_dataset(v2, "pets")
    assert "--overwrite" in (info.value.hint or "")
    assert import_dataset(v2, "pets", overwrite=True).class_names == ["a", "b", "c"]
    meta = store.read_meta(get_settings().datasets_dir / "pets")
    assert meta["class_names"] == ["a", "b", "c"]
    assert [p.name for p in get_settings().datasets_dir.iterdir()] == ["pets"]


def test_import_real_medmnist_npz(shared_datasets: Path) -> None:
    dataset = import_dataset(shared_datasets / "breastmnist" / "breastmnist.npz", "breast")
    assert dataset.meta["format"] == "npz"
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 546, "val": 78, "test": 156}
    assert dataset.class_names == ["0", "1"]


def test_import_folder_of_idx_pairs_maps_t10k_to_test(tmp_path: Path) -> None:
    write_idx(tmp_path / "idx", "train", tiny_images(6), np.arange(6) % 3)
    write_idx(tmp_path / "idx", "t10k", tiny_images(2), np.array([0, 2]), gz=False)
    dataset = import_dataset(tmp_path / "idx", "tiny")
    assert dataset.meta["format"] == "idx"
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 6, "test": 2}
    assert dataset.class_names == ["0", "1", "2"]


def test_import_idx_pair_given_as_two_files_in_any_order(tmp_path: Path) -> None:
    images, labels = write_idx(tmp_path, "digits", tiny_images(4), np.array([1, 0, 1, 1]))
    dataset = import_dataset([labels, images], "pair")
    assert dataset.splits["train"].labels.tolist() == [1, 0, 1, 1]


def test_import_csv_with_string_labels_and_a_shape(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("label,a,b,c,d,e,f\nyes,1,2,3,4,5,6\nno,6,5,4,3,2,1\n")
    dataset = import_dataset(path, "answers", size=(2, 3))
    assert dataset.class_names == ["no", "yes"] and dataset.shape == (1, 2, 3)


def test_import_refuses_a_csv_whose_labels_are_all_one_class(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("label,a,b,c,d\nyes,1,2,3,4\nyes,4,3,2,1\n")
    with pytest.raises(DataError, match="only one class \\('yes'\\) has training images") as info:
        import_dataset(path, "answers", size=(2, 2))
    assert "second" in (info.value.hint or "")
    assert store.list_imported() == []


def test_import_refuses_an_npz_whose_training_labels_are_one_class(tmp_path: Path) -> None:
    npz = tmp_path / "one.npz"
    images = np.zeros((6, 4, 4), dtype=np.uint8)
    np.savez(npz, train_images=images, train_labels=np.zeros((6, 1), dtype=np.int64),
             test_images=images[:2], test_labels=np.array([[0], [1]]))
    with pytest.raises(DataError, match="only one class \\('0'\\)"):
        import_dataset(npz, "one")


def test_import_refuses_an_idx_folder_without_a_train_pair(tmp_path: Path) -> None:
    write_idx(tmp_path / "idx", "t10k", tiny_images(3), np.array([1, 0, 1]))
    with pytest.raises(DataError, match="holds no training images \\(splits: test\\)") as info:
        import_dataset(tmp_path / "idx", "only-test")
    assert "train-images-idx3-ubyte" in (info.value.hint or "")
    assert store.list_imported() == []


def test_import_rejects_size_for_formats_it_does_not_apply_to(shared_datasets: Path) -> None:
    with pytest.raises(ConfigError, match="--size applies to image folders and CSV"):
        import_dataset(shared_datasets / "breastmnist" / "breastmnist.npz", "b", size=(8, 8))


def test_import_of_a_missing_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file or folder"):
        import_dataset(tmp_path / "nope", "nope")


def test_detect_format_needs_help_with_an_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"\0")
    with pytest.raises(DataError, match="cannot tell the dataset format") as info:
        import_dataset(path, "bin")
    assert "--format" in (info.value.hint or "")


def test_import_rejects_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown format 'parquet'"):
        import_dataset(tmp_path, "x", format="parquet")


def test_failed_import_leaves_no_partial_dataset(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "one", {"only": 2})
    with pytest.raises(DataError, match="only one class"):
        import_dataset(root, "one")
    assert store.list_imported() == []


def test_load_imported_round_trips_the_saved_copy(tmp_path: Path) -> None:
    original = import_dataset(write_image_folder(tmp_path / "rgb", {"r": 2, "g": 1},
                                                 mode="RGB"), "rgb")
    loaded = store.load_imported(get_settings().datasets_dir / "rgb")
    assert loaded.content_hash() == original.content_hash()
    assert loaded.class_names == ["g", "r"] and loaded.shape == (3, 8, 8)


def test_each_workspace_has_its_own_datasets(tmp_path: Path) -> None:
    import_dataset(write_image_folder(tmp_path / "a", {"cat": 2, "dog": 2}), "pets",
                   workspace="ws-aaaaaaaaaaaa")
    assert load_dataset("pets", "ws-aaaaaaaaaaaa").class_names == ["cat", "dog"]
    with pytest.raises(NotFoundError, match="pets"):
        load_dataset("pets")  # the default workspace has none
    with pytest.raises(NotFoundError):
        load_dataset("pets", "ws-bbbbbbbbbbbb")
    import_dataset(write_image_folder(tmp_path / "b", {"x": 2, "y": 2, "z": 2}), "pets",
                   workspace="ws-bbbbbbbbbbbb")  # the same name elsewhere: no clash
    assert load_dataset("pets", "ws-bbbbbbbbbbbb").num_classes == 3
    assert list_datasets("ws-aaaaaaaaaaaa")[0]["name"] == "pets"  # its own come first
    assert "pets" not in [r["name"] for r in list_datasets()]
    store.delete_dataset("pets", "ws-aaaaaaaaaaaa")
    with pytest.raises(NotFoundError):
        load_dataset("pets", "ws-aaaaaaaaaaaa")
    assert load_dataset("pets", "ws-bbbbbbbbbbbb").num_classes == 3
    with pytest.raises(NotFoundError, match="catalog"):
        store.delete_dataset("mnist", "ws-bbbbbbbbbbbb")


def test_an_npz_round_trips_with_its_class_names(tmp_path: Path) -> None:
    payload = store.dataset_npz(write_image_folder(tmp_path / "pets", {"cat": 3, "dog": 2}))
    upload = tmp_path / "upload.npz"
    upload.write_bytes(payload)
    dataset = import_dataset(upload, "pets")
    assert dataset.class_names == ["cat", "dog"] and len(dataset.splits["train"]) == 5
    np.savez(upload, train_images=np.zeros((4, 8, 8), np.uint8),
             train_labels=np.array([0, 1, 2, 1]), class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match="label 2 but only 2 class names"):
        import_dataset(upload, "three")
