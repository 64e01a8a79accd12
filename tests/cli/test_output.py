"""The --json convention: one line, and only numbers JSON can hold."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kaon.cli.output import print_json
from kaon.train.api import TrainResult


def test_nan_and_infinities_are_printed_as_null(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"roc_auc": math.nan, "loss": [1.5, math.inf], "nested": {"x": -math.inf}})
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert json.loads(line) == {"roc_auc": None, "loss": [1.5, None], "nested": {"x": None}}
    assert "NaN" not in line and "Infinity" not in line  # JSON.parse in a browser refuses them


def test_a_run_that_registered_nothing_prints_no_model() -> None:
    result = TrainResult(run_id="r", run_dir=Path("/tmp/r"), model=None, metrics={})
    assert result.to_dict()["model"] is None and result.to_dict()["version"] is None
    registered = TrainResult(run_id="r", run_dir=Path("/tmp/r"), model="digits:3", metrics={})
    assert (registered.to_dict()["model"], registered.to_dict()["version"]) == ("digits", 3)
