"""``kaon data list | info | import``, invoked through typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kaon.cli import data as data_cli
from kaon.config import get_settings
from kaon.errors import ConfigError, NotFoundError
from tests.data.fixtures import write_image, write_image_folder

runner = CliRunner()


def _json(output: str) -> Any:
    return json.loads(output.strip().splitlines()[-1])


def test_list_json_shows_catalog_datasets_found_on_the_data_path(shared_datasets: Path) -> None:
    result = runner.invoke(data_cli.app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in _json(result.output)}
    assert rows["pneumoniamnist"]["status"] == "available"
    assert rows["fashion-mnist"]["location"] == str(shared_datasets / "fashion-mnist")


def test_list_prints_a_table(shared_datasets: Path) -> None:
    result = runner.invoke(data_cli.app, ["list"])
    assert result.exit_code == 0
    assert "breastmnist" in result.output and "available" in result.output


def test_info_prints_counts_per_split_and_class(shared_datasets: Path) -> None:
    result = runner.invoke(data_cli.app, ["info", "pneumoniamnist"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines()
             if line.count("│") > 2}
    assert [c.strip() for c in lines["pneumonia"].split("│")[2:6]] == ["3494", "389", "390",
                                                                        "4273"]
    assert [c.strip() for c in lines["normal"].split("│")[2:5]] == ["1214", "135", "234"]
    assert "1x28x28" in result.output


def test_info_json_describes_the_dataset(shared_datasets: Path) -> None:
    result = runner.invoke(data_cli.app, ["info", "breastmnist", "--json"])
    payload = _json(result.output)
    assert payload["splits"] == {"train": 546, "val": 78, "test": 156}
    assert payload["classes"] == ["malignant", "normal/benign"]


def test_info_of_a_missing_dataset_raises_not_found() -> None:
    result = runner.invoke(data_cli.app, ["info", "no-such-data"])
    assert isinstance(result.exception, NotFoundError)
    assert result.exit_code != 0


def test_import_resizes_a_folder_and_the_import_is_then_listed(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "shapes", {"circle": 2, "square": 1}, size=(12, 12))
    write_image(root / "square" / "odd.png", (20, 9))
    result = runner.invoke(data_cli.app, ["import", str(root), "--name", "shapes",
                                          "--size", "6x5", "--json"])
    assert result.exit_code == 0, result.output
    payload = _json(result.output)
    assert payload["shape"] == [1, 6, 5] and payload["counts"]["train"] == {"circle": 2,
                                                                             "square": 2}
    assert (get_settings().datasets_dir / "shapes" / "data.npz").is_file()
    listed = _json(runner.invoke(data_cli.app, ["list", "--json"]).output)
    assert {"name": "shapes", "kind": "imported"}.items() <= next(
        r for r in listed if r["name"] == "shapes").items()


def test_import_prints_a_summary_table(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", {"cat": 2, "dog": 1})
    result = runner.invoke(data_cli.app, ["import", str(root), "-n", "pets"])
    assert result.exit_code == 0, result.output
    assert "Imported pets (folder): 2 classes, train 3" in result.output


def test_import_rejects_a_malformed_size(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", {"cat": 1, "dog": 1})
    result = runner.invoke(data_cli.app, ["import", str(root), "--name", "p", "--size", "28by28"])
    assert isinstance(result.exception, ConfigError)
    assert "28x28" in (result.exception.hint or "")


def test_import_rejects_an_unsafe_name(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", {"cat": 1, "dog": 1})
    result = runner.invoke(data_cli.app, ["import", str(root), "--name", "x; drop table"])
    assert isinstance(result.exception, ConfigError)


def test_delete_removes_an_import_and_refuses_the_catalog(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "shapes", {"circle": 2, "square": 1})
    assert runner.invoke(data_cli.app, ["import", str(root), "--name", "shapes"]).exit_code == 0
    kept = runner.invoke(data_cli.app, ["delete", "shapes", "--json"], input="n\n")
    assert kept.exit_code == 1 and (get_settings().datasets_dir / "shapes").exists()
    result = runner.invoke(data_cli.app, ["delete", "shapes", "--json"], input="y\n")
    assert result.exit_code == 0 and _json(result.stdout) == {"deleted": "shapes"}
    assert not (get_settings().datasets_dir / "shapes").exists()
    again = runner.invoke(data_cli.app, ["delete", "shapes", "--yes"])
    assert isinstance(again.exception, NotFoundError)
    catalog = runner.invoke(data_cli.app, ["delete", "mnist"])  # refused before asking
    assert isinstance(catalog.exception, NotFoundError) and "read-only" in str(catalog.exception)


@pytest.mark.parametrize("command", ["list", "info", "import", "delete"])
def test_every_command_documents_an_example(command: str) -> None:
    result = runner.invoke(data_cli.app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example: kaon data " + command in result.output


@pytest.mark.parametrize(("text", "size"), [("28x28", (28, 28)), ("64X32", (64, 32)),
                                            ("16", (16, 16))])
def test_parse_size_reads_height_by_width(text: str, size: tuple[int, int]) -> None:
    assert data_cli.parse_size(text) == size


@pytest.mark.parametrize("text", ["0x5", "x", "5x", "99999x1", "-3x3"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError):
        data_cli.parse_size(text)
