"""Readers: real shared data, small fixtures, and every way a file can be broken."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kaon.data import formats
from kaon.errors import DataError
from tests.data.fixtures import idx_bytes, tiny_images, write_idx, write_image, write_image_folder

# --- IDX --------------------------------------------------------------------------------------


def test_read_idx_reads_real_mnist_train_split(shared_datasets: Path) -> None:
    mnist = shared_datasets / "mnist"
    split = formats.read_idx(mnist / "train-images-idx3-ubyte.gz",
                             mnist / "train-labels-idx1-ubyte.gz")
    assert split.images.shape == (60000, 1, 28, 28)
    assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
    assert sorted(split.labels.unique().tolist()) == list(range(10))
    assert int(split.images.max()) == 255


def test_read_idx_reads_real_mnist_test_split(shared_datasets: Path) -> None:
    mnist = shared_datasets / "mnist"
    split = formats.read_idx(mnist / "t10k-images-idx3-ubyte.gz",
                             mnist / "t10k-labels-idx1-ubyte.gz")
    assert len(split) == 10000


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips_a_small_fixture(tmp_path: Path, gz: bool) -> None:
    images, labels = tiny_images(5, 3, 4), np.array([0, 1, 2, 1, 0], dtype=np.uint8)
    split = formats.read_idx(*write_idx(tmp_path, "train", images, labels, gz=gz))
    assert split.images.shape == (5, 1, 3, 4)
    assert np.array_equal(split.images[:, 0].numpy(), images)
    assert split.labels.tolist() == [0, 1, 2, 1, 0]


def test_read_idx_rejects_swapped_files_by_magic_number(tmp_path: Path) -> None:
    images_path, labels_path = write_idx(tmp_path, "train", tiny_images(2), np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="bad magic number 2049, expected 2051") as info:
        formats.read_idx(labels_path, images_path)
    assert str(labels_path) in info.value.message and info.value.hint


def test_read_idx_reports_truncation_with_expected_and_actual_bytes(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(tiny_images(3, 4, 4))[:-10])
    labels = tmp_path / "labels"
    labels.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match=r"truncated: dims \(3, 4, 4\) need 64 bytes, got 54"):
        formats.read_idx(path, labels)


def test_read_idx_names_a_file_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="bad gzip") as info:
        formats.read_idx(path, path)
    assert str(path) in info.value.message


def test_read_idx_names_a_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(tiny_images(50)))[:-30])
    with pytest.raises(DataError, match="bad gzip data") as info:
        formats.read_idx(path, path)
    assert str(path) in info.value.message


def test_read_idx_rejects_a_label_count_mismatch(tmp_path: Path) -> None:
    images_path, _ = write_idx(tmp_path, "a", tiny_images(4), np.zeros(4, np.uint8))
    _, labels_path = write_idx(tmp_path, "b", tiny_images(3), np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"holds 4 images but .* holds 3 labels"):
        formats.read_idx(images_path, labels_path)


def test_read_idx_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        formats.read_idx(tmp_path / "nope.gz", tmp_path / "nope2.gz")


# --- npz --------------------------------------------------------------------------------------


def test_read_npz_reads_real_pneumoniamnist(shared_datasets: Path) -> None:
    splits = formats.read_npz(shared_datasets / "pneumoniamnist" / "pneumoniamnist.npz")
    assert {k: len(v) for k, v in splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert splits["train"].images.shape[1:] == (1, 28, 28)
    assert torch.bincount(splits["train"].labels).tolist() == [1214, 3494]


def test_read_npz_accepts_channels_last_images_and_flat_labels(tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    images = np.random.default_rng(0).integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=np.arange(6) % 2)
    split = formats.read_npz(path)["train"]
    assert split.images.shape == (6, 3, 5, 7)
    assert np.array_equal(split.images.permute(0, 2, 3, 1).numpy(), images)


def test_read_npz_names_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "half.npz"
    np.savez(path, train_images=tiny_images(2), train_labels=np.zeros(2, np.uint8),
             test_images=tiny_images(2))
    with pytest.raises(DataError, match="missing npz key 'test_labels'") as info:
        formats.read_npz(path)
    assert str(path) in info.value.message


def test_read_npz_refuses_pickled_object_arrays(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, train_images=np.array([{"a": 1}, None], dtype=object),
             train_labels=np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="pickled object arrays"):
        formats.read_npz(path)


def test_read_npz_refuses_a_header_declaring_more_than_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (10**13, 28, 28)})
    with zipfile.ZipFile(path, "w") as archive:  # 7.8 PB declared, a few hundred bytes held
        archive.writestr("train_images.npy", header.getvalue())
        archive.writestr("train_labels.npy", b"")
    with pytest.raises(DataError, match="declares shape"):
        formats.read_npz(path)


def test_read_npz_rejects_a_file_that_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "fake.npz"
    path.write_bytes(b"\x80\x04 not a zip")
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        formats.read_npz(path)


def test_read_npz_rejects_a_truncated_archive(tmp_path: Path, shared_datasets: Path) -> None:
    path = tmp_path / "cut.npz"
    path.write_bytes((shared_datasets / "breastmnist" / "breastmnist.npz").read_bytes()[:200_000])
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        formats.read_npz(path)
    assert str(path) in info.value.message


def test_read_npz_rejects_float_images(tmp_path: Path) -> None:
    path = tmp_path / "float.npz"
    np.savez(path, train_images=np.random.rand(2, 4, 4), train_labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="images are float64, expected uint8"):
        formats.read_npz(path)


def test_read_npz_rejects_label_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.npz"
    np.savez(path, train_images=tiny_images(3), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        formats.read_npz(path)


# --- image folders ----------------------------------------------------------------------------


def test_read_image_folder_uses_sorted_subfolders_as_classes(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", {"dog": 2, "cat": 3})
    splits, class_names = formats.read_image_folder(root)
    assert class_names == ["cat", "dog"]
    assert list(splits) == ["train"]
    assert splits["train"].images.shape == (5, 1, 8, 8)
    assert splits["train"].labels.tolist() == [0, 0, 0, 1, 1]


def test_read_image_folder_reads_train_val_test_splits(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "ds" / "train", {"a": 2, "b": 2})
    write_image_folder(tmp_path / "ds" / "test", {"a": 1, "b": 1})
    splits, class_names = formats.read_image_folder(tmp_path / "ds")
    assert class_names == ["a", "b"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "test": 2}


def test_read_image_folder_refuses_class_folders_beside_train(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "ds" / "train", {"a": 1, "b": 1})
    write_image_folder(tmp_path / "ds", {"stray": 1})
    with pytest.raises(DataError, match="must be train/, val/ or test/, but found stray/"):
        formats.read_image_folder(tmp_path / "ds")


def test_read_image_folder_keeps_colour_as_three_channels(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "rgb", {"x": 1, "y": 1}, mode="RGB")
    splits, _ = formats.read_image_folder(root)
    assert splits["train"].images.shape == (2, 3, 8, 8)
    assert splits["train"].images[0, :, 0, 0].tolist() == [0, 255, 0]


def test_read_image_folder_with_mixed_sizes_names_two_files_and_suggests_resize(
        tmp_path: Path) -> None:
    write_image(tmp_path / "ds" / "a" / "small.png", (8, 8))
    write_image(tmp_path / "ds" / "b" / "big.png", (10, 12))
    with pytest.raises(DataError) as info:
        formats.read_image_folder(tmp_path / "ds")
    assert "small.png is 8x8" in info.value.message and "big.png is 10x12" in info.value.message
    assert "--size 28x28" in (info.value.hint or "")


def test_read_image_folder_resizes_when_given_a_size(tmp_path: Path) -> None:
    write_image(tmp_path / "ds" / "a" / "small.png", (8, 8))
    write_image(tmp_path / "ds" / "b" / "big.png", (10, 12))
    splits, _ = formats.read_image_folder(tmp_path / "ds", size=(6, 5))
    assert splits["train"].images.shape == (2, 1, 6, 5)


def test_read_image_folder_rejects_a_single_class(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "ds", {"only": 3})
    with pytest.raises(DataError, match="only one class \\('only'\\)"):
        formats.read_image_folder(root)


def test_read_image_folder_rejects_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders") as info:
        formats.read_image_folder(tmp_path / "empty")
    assert info.value.hint and "sub-folder" in info.value.hint


def test_read_image_folder_names_a_corrupt_image(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "ds", {"a": 1, "b": 1})
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        formats.read_image_folder(root)


# --- CSV --------------------------------------------------------------------------------------


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_read_csv_maps_string_labels_to_sorted_class_names(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "p0,p1,p2,p3,label",
                      ["0,1,2,3,zebra", "4,5,6,7,ant", "255,0,0,9,zebra"])
    splits, class_names = formats.read_csv(path)
    assert class_names == ["ant", "zebra"]
    assert splits["train"].labels.tolist() == [1, 0, 1]
    assert splits["train"].images.shape == (3, 1, 2, 2)
    assert splits["train"].images[2, 0].tolist() == [[255, 0], [0, 9]]


def test_read_csv_takes_integer_labels_and_an_explicit_shape(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "y,a,b,c,d,e,f", ["2,1,2,3,4,5,6", "0,6,5,4,3,2,1"])
    splits, class_names = formats.read_csv(path, label_column="y", shape=(2, 3))
    assert class_names == ["0", "1", "2"]
    assert splits["train"].images.shape == (2, 1, 2, 3)


def test_read_csv_needs_a_shape_for_non_square_images(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "label,a,b,c", ["0,1,2,3"])
    with pytest.raises(DataError, match="3 pixel columns do not make a square image"):
        formats.read_csv(path)


def test_read_csv_names_the_missing_label_column(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "class,a", ["0,1"])
    with pytest.raises(DataError, match="no 'label' column") as info:
        formats.read_csv(path)
    assert "--label-column" in (info.value.hint or "")


def test_read_csv_names_the_line_of_a_bad_pixel(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "label,a,b,c,d", ["0,1,2,3,4", "1,1,x,3,4"])
    with pytest.raises(DataError, match="line 3: pixel column 2 holds 'x'"):
        formats.read_csv(path)


def test_read_csv_refuses_absurd_labels_and_pixels_without_building_them(
        tmp_path: Path) -> None:
    huge = _write_csv(tmp_path / "l.csv", "label,a,b,c,d", ["99999999999,1,2,3,4"])
    with pytest.raises(DataError, match="over 10,000 classes"):  # not 10**11 class names
        formats.read_csv(huge)
    overflow = _write_csv(tmp_path / "p.csv", "label,a,b,c,d",
                          ["0,1,2,3,99999999999999999999999"])
    with pytest.raises(DataError, match="line 2: pixel column 4 holds"):
        formats.read_csv(overflow)


def test_read_csv_takes_excel_s_utf8_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbflabel,a,b,c,d\n0,1,2,3,4\n1,5,6,7,8\n")
    splits, class_names = formats.read_csv(path)
    assert class_names == ["0", "1"] and splits["train"].images.shape == (2, 1, 2, 2)


def test_images_without_pixels_and_labels_past_int64_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="0x8 pixels hold nothing"):
        formats.make_split("x", np.zeros((3, 0, 8), np.uint8), np.zeros(3, np.int64))
    with pytest.raises(DataError, match="over 10,000 classes"):
        formats.make_split("x", np.zeros((1, 2, 2), np.uint8),
                           np.array([2**63 + 5], dtype=np.uint64))  # would wrap negative


def test_read_csv_rejects_pixels_outside_0_255(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", "label,a,b,c,d", ["0,1,2,3,4", "1,1,256,3,4"])
    with pytest.raises(DataError, match="line 3: pixel 256 outside 0-255"):
        formats.read_csv(path)
