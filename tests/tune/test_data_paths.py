"""``kaon tune --data PATH``: a user's own folder or .npz is imported first, and bad data is
refused before any search work (through the CLI, as a user meets it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from kaon.cli.main import app
from kaon.config import get_settings
from kaon.data import import_dataset, load_dataset
from kaon.errors import ConfigError, DataError, NotFoundError
from kaon.tune.data import import_name, slug
from kaon.tune.study import storage
from tests.data.fixtures import write_image, write_image_folder

runner = CliRunner()


def tune(*args: str) -> BaseException | None:
    result = runner.invoke(app, ["tune", *args, "--json"])
    return result.exception


def imported() -> list[str]:
    root = get_settings().datasets_dir
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def no_study_started() -> bool:
    return optuna.get_all_study_summaries(storage()) == []


def test_a_folder_with_one_class_is_refused_before_any_work(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "cats", {"cat": 3})
    error = tune("--data", str(folder), "--time", "5m")
    assert isinstance(error, DataError) and "only one class" in error.message
    assert imported() == [] and no_study_started()


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    error = tune("--data", str(tmp_path / "empty"), "--time", "5m")
    assert isinstance(error, DataError) and "no class sub-folders" in error.message
    assert imported() == [] and no_study_started()


def test_mixed_sizes_need_size_and_with_it_the_folder_is_imported(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "My Shapes", {"circle": 6, "square": 6})
    write_image(folder / "square" / "odd.png", (10, 7))
    error = tune("--data", str(folder), "--time", "5m")
    assert isinstance(error, DataError) and "differ in size" in error.message
    assert "--size" in (error.hint or "")
    assert imported() == []
    # with --size it is imported, then checked like any dataset (this budget is too small)
    error = tune("--data", str(folder), "--size", "6x6", "--time", "1s")
    assert isinstance(error, ConfigError) and "too small" in error.message
    assert imported() == ["my-shapes"]
    assert load_dataset("my-shapes").shape == (1, 6, 6)
    assert no_study_started()
    tune("--data", str(folder), "--size", "6x6", "--time", "1s")  # again: the same import
    assert imported() == ["my-shapes"]


def test_an_npz_path_is_imported_under_its_stem(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8)
    labels = (np.arange(40) % 2).reshape(-1, 1)
    np.savez(tmp_path / "scans.npz", train_images=images, train_labels=labels,
             test_images=images[:8], test_labels=labels[:8])
    error = tune("--data", str(tmp_path / "scans.npz"), "--time", "1s")
    assert isinstance(error, ConfigError) and "too small" in error.message
    assert imported() == ["scans"]


def test_size_with_a_dataset_name_and_a_missing_path_are_refused(tmp_path: Path) -> None:
    error = tune("--data", "breastmnist", "--size", "28x28")
    assert isinstance(error, ConfigError) and "--size" in error.message
    error = tune("--data", str(tmp_path / "nowhere"))
    assert isinstance(error, NotFoundError) and "neither a dataset name" in error.message


def test_a_path_given_to_the_python_api_says_how_to_import_it(tmp_path: Path) -> None:
    from kaon.tune import TuneConfig

    with pytest.raises(ValueError, match=r"not a dataset name.*kaon data import PATH"):
        TuneConfig(dataset=str(tmp_path / "xrays"), time_seconds=300)


def test_import_names_avoid_the_catalog_and_other_sources(tmp_path: Path) -> None:
    assert import_name(tmp_path) == slug(tmp_path.name)
    (tmp_path / "mnist").mkdir()
    assert import_name(tmp_path / "mnist") == "mnist-2"  # never shadow a catalog dataset
    first = write_image_folder(tmp_path / "a" / "xrays", {"ok": 1, "sick": 1})
    other = write_image_folder(tmp_path / "b" / "xrays", {"ok": 1, "sick": 1})
    import_dataset(first, "xrays")
    assert import_name(first) == "xrays"  # its own earlier import
    assert import_name(other) == "xrays-2"
    assert slug("Chest X-Rays (2024)!") == "chest-x-rays-2024"


def test_a_class_with_too_few_images_is_refused_before_any_study(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "pairs", {"a": 1, "b": 1})  # one image per class
    error = tune("--data", str(folder), "--time", "5m")
    assert isinstance(error, DataError) and "at least 5 per class" in error.message
    assert no_study_started()


@pytest.mark.parametrize(("args", "flag"), [
    (["--workers", "0"], "--workers"), (["--time", "0s"], "--time"),
    (["--objective", "foo"], "--objective"), (["--cv", "11"], "--cv"),
    (["--name", "Bad!"], "--name"), (["--seed", "-1"], "--seed")])
def test_bad_options_name_their_flag_in_plain_words(args: list[str], flag: str) -> None:
    error = tune("--data", "breastmnist", *args)
    assert isinstance(error, ConfigError), error
    assert error.message.startswith("Invalid tune options: " + flag), error.message
    assert "pydantic.dev" not in error.message and no_study_started()


def test_trial_time_errors_name_trial_time(tmp_path: Path) -> None:
    error = tune("--data", "breastmnist", "--trial-time", "5x")
    assert isinstance(error, ConfigError) and error.message.startswith("--trial-time '5x'")


def test_resume_refuses_options_it_would_ignore_and_names_unknown_studies() -> None:
    error = tune("--resume", "tune-00000000", "--time", "10m", "--workers", "1")
    assert isinstance(error, ConfigError) and "--time, --workers cannot change" in error.message
    error = tune("--resume", "tune-00000000", "--no-robust")
    assert isinstance(error, ConfigError) and "--robust/--no-robust cannot" in error.message
    error = tune("--resume", "tune-00000000")
    assert isinstance(error, NotFoundError) and "No tuning study" in error.message


def test_a_space_file_that_is_not_yaml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("families: [mlp\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00families")
    for path in (bad, binary, tmp_path):  # broken YAML, not UTF-8, a folder
        error = tune("--data", "breastmnist", "--space", str(path))
        assert isinstance(error, ConfigError) and "Search-space file" in error.message, error
