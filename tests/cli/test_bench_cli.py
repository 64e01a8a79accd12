"""``kaon bench serve``: a real server on a free port, measured; bad options and a server
that cannot start are clean errors, never a traceback or a silent wait."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kaon.cli.main import app
from kaon.errors import ConfigError, UnavailableError
from tests.registry.fixtures import register_tiny

runner = CliRunner()


@pytest.mark.serial  # times processes on the wall clock: run alone (Makefile)
def test_a_short_run_prints_one_row_per_concurrency_as_json() -> None:
    register_tiny("digits")
    result = runner.invoke(app, ["bench", "serve", "digits:1", "--concurrency", "1,2",
                                 "--window", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["concurrency"] for r in rows] == [1, 2]
    assert all(r["requests_per_s"] > 0 and r["errors"] == 0 for r in rows)


@pytest.mark.parametrize("levels", ["a,b", "0", ","])
def test_a_bad_concurrency_is_refused(levels: str) -> None:
    result = runner.invoke(app, ["bench", "serve", "digits:1", "--concurrency", levels])
    assert isinstance(result.exception, ConfigError)
    assert "needs positive integers" in str(result.exception)


@pytest.mark.parametrize("args", [["--window", "0"], ["--images", "0"], ["--replicas", "0"]])
def test_out_of_range_options_are_usage_errors(args: list[str]) -> None:
    result = runner.invoke(app, ["bench", "serve", "digits:1", *args])
    assert result.exit_code == 2 and "greater than or equal to" in result.output


def test_a_server_that_cannot_start_is_an_error_with_its_last_lines() -> None:
    from kaon.registry import get

    register_tiny("digits")
    get("digits:1").artifact.unlink()  # the server refuses to start: the weights are gone
    result = runner.invoke(app, ["bench", "serve", "digits:1", "--concurrency", "1"])
    assert isinstance(result.exception, UnavailableError), result.output
    assert "exited (code 6) before it was ready" in str(result.exception)
    assert "is missing" in str(result.exception)
