"""``kaon tune --data PATH``: a user's own folder or .npz is imported first, and bad data is
refused before any search work (through the CLI, as a user meets it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    # given with their default values, they would be ignored all the same
    error = tune("--resume", "tune-00000000", "--objective", "accuracy", "--seed", "0",
                 "--sampler", "tpe", "--warm-start")
    assert isinstance(error, ConfigError) and "--objective, --sampler, --seed, " \
        "--warm-start/--no-warm-start cannot" in error.message, error
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


def test_one_fold_names_the_cv_flag_not_the_config_field() -> None:
    error = tune("--data", "breastmnist", "--cv", "1")
    assert isinstance(error, ConfigError), error
    assert error.message.startswith("Invalid tune options: --cv: 1 fold is not "
                                    "cross-validation"), error.message
    assert "cv_folds" not in error.message and no_study_started()


def test_a_missing_space_file_has_a_hint(tmp_path: Path) -> None:
    error = tune("--data", "breastmnist", "--space", str(tmp_path / "nope.yaml"))
    assert isinstance(error, ConfigError) and "does not exist" in error.message
    assert error.hint and "--space" in error.hint


def test_a_trial_time_longer_than_the_budget_is_named_as_such(shared_datasets: Path) -> None:
    error = tune("--data", "breastmnist", "--time", "1m", "--trial-time", "5m")
    assert isinstance(error, ConfigError), error
    assert "--trial-time 5m is longer than the whole --time 1m" in error.message, error.message
    assert "Lower --trial-time" in (error.hint or "") and no_study_started()


def test_a_budget_the_checks_used_up_is_named_never_negative(shared_datasets: Path) -> None:
    error = tune("--data", "breastmnist", "--time", "1s")
    assert isinstance(error, ConfigError), error
    assert error.message.startswith("A --time of 1s is too small"), error.message
    assert "-0s" not in error.message and "-1s" not in error.message
    assert "--time 1m or more" in (error.hint or "")


def small_npz(path: Path, images: int = 12) -> Path:
    """Two classes of 16x16 images and no test split: the 10% hold-out is one image."""
    pixels = np.random.default_rng(0).integers(0, 255, (images, 16, 16), dtype=np.uint8)
    np.savez(path, train_images=pixels, train_labels=np.arange(images) % 2)
    return path


def test_the_import_note_goes_to_stderr_not_stdout(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tune", "--data", str(small_npz(tmp_path / "scans.npz")),
                                 "--time", "1s"])
    assert isinstance(result.exception, ConfigError)
    assert "Imported it as dataset scans" in result.stderr and "Imported" not in result.stdout


def test_the_same_images_are_imported_once_and_other_images_get_a_name_of_their_own(
        tmp_path: Path) -> None:
    """Tuning a folder again reuses its import when the images are the same; with another
    --size (or other files) they are imported as pets-2, and pets, which earlier models and
    studies were made from, is left as it was (before, it was replaced)."""
    folder = write_image_folder(tmp_path / "pets", {"cat": 6, "dog": 6})

    def tune_pets(size: str) -> str:
        result = runner.invoke(app, ["tune", "--data", str(folder), "--size", size,
                                     "--time", "1s"])  # imports, then refuses the budget
        assert isinstance(result.exception, ConfigError), result.output
        return result.stderr

    assert "Imported it as dataset pets" in tune_pets("8x8")
    first = load_dataset("pets")
    assert "images are those of dataset pets, imported before" in tune_pets("8x8")
    assert "Imported it as dataset pets-2 (pets holds an earlier import" in tune_pets("6x6")
    assert imported() == ["pets", "pets-2"]
    assert load_dataset("pets").content_hash() == first.content_hash()
    assert load_dataset("pets").shape[1:] == (8, 8)
    assert load_dataset("pets-2").shape[1:] == (6, 6)
    assert "images are those of dataset pets-2" in tune_pets("6x6")


def test_a_test_split_too_small_warns_before_the_search_and_in_the_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kaon.tune import study
    from kaon.tune.study import TuneResult

    happened: list[str] = []

    def emit(warnings: list[dict[str, str]]) -> None:
        happened.append("warned")
        real_emit(warnings)

    def no_search(found: optuna.Study, cfg: object, sizes: dict[str, Any], *args: object,
                  **kwargs: object) -> TuneResult:
        happened.append("searched")
        return TuneResult(found.study_name, None, None, {}, {"roc_auc": float("nan")},
                          {"complete": 0}, 1.0, warnings=sizes["warnings"])

    real_emit = study.emit
    monkeypatch.setattr(study, "emit", emit)
    monkeypatch.setattr(study, "_search", no_search)
    result = runner.invoke(app, ["tune", "--data", str(small_npz(tmp_path / "tiny.npz")),
                                 "--time", "5m", "--json"])  # (no search: room to time)
    assert result.exit_code == 0, result.output
    assert "Warning: The test split of 'tiny' (a 10% hold-out" in result.stderr
    assert "Hint: Give a larger test split" in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # stdout stays the single JSON line
    summary = json.loads(lines[0])
    assert summary["test"]["roc_auc"] is None
    assert "fewer than 2" in summary["warnings"][0]["message"]
    assert happened == ["warned", "searched"]  # before any work


@pytest.mark.serial  # times processes on the wall clock: run alone (Makefile)
def test_a_budget_the_portfolio_timing_used_up_is_refused_before_a_study(
        shared_datasets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a busy machine timing the warm-start models can take what the first check left for
    a trial: the search must refuse then, not start and end with no trial run."""
    import time
    import types

    from kaon.tune import study as study_module

    shift = [0.0]
    clock = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time)
                                     if not n.startswith("_")})
    clock.monotonic = lambda: time.monotonic() + shift[0]
    timed = study_module._time_portfolio

    def slow_timing(*args: Any, **kwargs: Any) -> Any:
        shift[0] += 50.0  # as if the timing had taken 50 s
        return timed(*args, **kwargs)

    monkeypatch.setattr(study_module, "time", clock)
    monkeypatch.setattr(study_module, "_time_portfolio", slow_timing)
    error = tune("--data", "breastmnist", "--time", "1m")
    assert isinstance(error, ConfigError), error
    assert error.message.startswith("A --time of 1m is too small"), error.message
    assert "the checks before the search took" in error.message and no_study_started()


def test_auc_with_more_folds_than_a_class_has_images_is_refused(tmp_path: Path) -> None:
    """Each held-out fold would miss that class, and every trial would score NaN."""
    images = np.random.default_rng(0).integers(0, 255, (46, 8, 8), dtype=np.uint8)
    labels = np.array([0] * 40 + [1] * 6).reshape(-1, 1)
    np.savez(tmp_path / "rare.npz", train_images=images, train_labels=labels,
             test_images=images[:8], test_labels=labels[:8])
    error = tune("--data", str(tmp_path / "rare.npz"), "--time", "10m", "--objective", "auc",
                 "--cv", "10")
    assert isinstance(error, ConfigError) and "--cv 10 leaves a fold" in error.message, error
    assert no_study_started()
