"""``kaon models list | show | alias | delete``, invoked through typer's test runner."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from kaon.cli.main import app, main
from kaon.errors import ConfigError, NotFoundError
from kaon.registry import get, list_models
from tests.registry.fixtures import register_tiny

runner = CliRunner()


def kaon(*args: str, stdin: str | None = None) -> Any:
    return runner.invoke(app, ["models", *args], input=stdin)


def last_json(output: str) -> Any:
    return json.loads(output.strip().splitlines()[-1])


# ---- list ---------------------------------------------------------------------------------------
def test_list_json_of_an_empty_registry_is_an_empty_list() -> None:
    result = kaon("list", "--json")
    assert result.exit_code == 0, result.output
    assert last_json(result.output) == []


def test_list_json_gives_every_version_with_aliases_and_lineage_but_no_spec() -> None:
    register_tiny("digits")
    register_tiny("digits", alias="production", parent="digits:1")
    result = kaon("list", "--json")
    assert result.exit_code == 0, result.output
    rows = last_json(result.output)
    assert [(r["name"], r["version"], r["aliases"], r["parent"]) for r in rows] == [
        ("digits", 1, [], None), ("digits", 2, ["production"], "digits:1")]
    assert all(r["spec"] is None for r in rows)


def test_list_prints_a_table_with_test_accuracy() -> None:
    register_tiny("digits", metrics={"test_accuracy": 0.98765}, alias="production")
    result = kaon("list")
    assert result.exit_code == 0, result.output
    assert "digits" in result.output and "production" in result.output
    assert "0.9877" in result.output


def test_list_of_an_empty_registry_says_how_to_train_one() -> None:
    assert "No models yet" in kaon("list").output


# ---- show ---------------------------------------------------------------------------------------
def test_show_json_describes_one_version() -> None:
    register_tiny("digits", metrics={"test_accuracy": 0.5})
    result = kaon("show", "digits:1", "--json")
    assert result.exit_code == 0, result.output
    info = last_json(result.output)
    assert (info["name"], info["version"]) == ("digits", 1)
    assert info["signature"]["shape"] == [1, 28, 28]
    assert info["metrics"] == {"test_accuracy": 0.5}
    assert info["spec"]["model"]["family"] == "mlp"
    assert info["artifact"].endswith("model.safetensors")


def test_show_resolves_an_alias() -> None:
    register_tiny("digits", alias="production")
    register_tiny("digits")
    assert last_json(kaon("show", "digits@production", "--json").output)["version"] == 1


def test_show_prints_signature_and_classes() -> None:
    register_tiny("digits")
    result = kaon("show", "digits")
    assert result.exit_code == 0, result.output
    assert "digits:1" in result.output
    assert "1x28x28 uint8 images" in result.output


def test_show_prints_the_lineage_row() -> None:
    register_tiny("digits-tuned", lineage={"study": "tune-3f9c1a2b", "trial": 7,
                                           "report": "/r/tune-report"})
    register_tiny("digits")
    rows = [line for line in kaon("show", "digits-tuned:1").output.splitlines()
            if line.startswith("│ lineage ")]
    assert len(rows) == 1
    assert "study tune-3f9c1a2b, trial 7, report /r/tune-report" in rows[0]
    plain = [line for line in kaon("show", "digits").output.splitlines()
             if line.startswith("│ lineage ")]
    assert len(plain) == 1 and plain[0].split("│")[2].strip() == "-"


def test_show_of_an_unknown_model_fails_with_not_found() -> None:
    register_tiny("digits")
    result = kaon("show", "nope")
    assert result.exit_code != 0
    assert isinstance(result.exception, NotFoundError)
    assert "Known models: digits" in result.exception.message


def test_show_of_an_unknown_version_lists_the_known_versions() -> None:
    register_tiny("digits")
    result = kaon("show", "digits:4")
    assert isinstance(result.exception, NotFoundError)
    assert "Known versions: 1" in result.exception.message


def test_show_of_a_malformed_reference_is_a_config_error() -> None:
    result = kaon("show", "x'; DROP TABLE models;--")
    assert isinstance(result.exception, ConfigError)


def test_the_kaon_entry_point_exits_3_with_a_message_for_an_unknown_model(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["kaon", "models", "show", "nope"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == NotFoundError.exit_code == 3
    printed = capsys.readouterr()
    assert "Error: No model named 'nope'. Known models: (none)." in printed.err
    assert "Hint:" in printed.err and "kaon models list" in printed.err
    assert printed.out == ""


def test_the_kaon_entry_point_exits_2_for_a_malformed_reference(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["kaon", "models", "show", "../etc/passwd"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == ConfigError.exit_code == 2
    assert "is not a model reference" in capsys.readouterr().err


# ---- alias --------------------------------------------------------------------------------------
def test_alias_json_points_the_alias_at_a_version() -> None:
    register_tiny("digits")
    register_tiny("digits")
    result = kaon("alias", "digits:1", "production", "--json")
    assert result.exit_code == 0, result.output
    assert last_json(result.output) == {"alias": "digits@production", "version": 1}
    assert get("digits@production").version == 1


def test_alias_moves_an_existing_alias() -> None:
    register_tiny("digits", alias="production")
    register_tiny("digits")
    result = kaon("alias", "digits:2", "production")
    assert result.exit_code == 0, result.output
    assert "digits@production → version 2" in result.output
    assert get("digits@production").version == 2


def test_alias_remove_json_removes_it() -> None:
    register_tiny("digits", alias="production")
    result = kaon("alias", "digits", "production", "--remove", "--json")
    assert result.exit_code == 0, result.output
    assert last_json(result.output) == {"removed": "digits@production"}
    assert get("digits:1").aliases == ()


def test_alias_of_an_unknown_model_fails_with_not_found() -> None:
    result = kaon("alias", "ghost:1", "production")
    assert isinstance(result.exception, NotFoundError)


# ---- delete -------------------------------------------------------------------------------------
def test_delete_json_with_yes_removes_the_version() -> None:
    register_tiny("digits")
    register_tiny("digits")
    result = kaon("delete", "digits:2", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert last_json(result.output) == {"deleted": ["digits:2"]}
    assert [i.ref for i in list_models()] == ["digits:1"]


def test_delete_of_a_bare_name_removes_every_version() -> None:
    register_tiny("digits")
    register_tiny("digits")
    result = kaon("delete", "digits", "-y")
    assert result.exit_code == 0, result.output
    assert "Deleted digits:1, digits:2." in result.output
    assert list_models() == []


@pytest.mark.parametrize("answer", ["n\n", "\n"])
def test_delete_asks_first_and_keeps_the_model_unless_confirmed(answer: str) -> None:
    register_tiny("digits")
    result = kaon("delete", "digits", stdin=answer)
    assert result.exit_code != 0
    assert "Delete digits and its weights?" in result.output
    assert [i.ref for i in list_models()] == ["digits:1"]


def test_delete_goes_ahead_when_confirmed() -> None:
    register_tiny("digits")
    result = kaon("delete", "digits:1", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert list_models() == []


def test_delete_of_an_unknown_model_fails_with_not_found() -> None:
    result = kaon("delete", "ghost", "--yes")
    assert isinstance(result.exception, NotFoundError)
