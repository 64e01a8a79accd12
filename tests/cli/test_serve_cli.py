"""``kaon serve`` refuses bad options before it binds the port or loads the model."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from kaon.cli.main import app
from kaon.errors import ConfigError
from tests.registry.fixtures import register_tiny

runner = CliRunner()


def test_an_unknown_device_is_refused_with_the_choices() -> None:
    register_tiny("digits")
    result = runner.invoke(app, ["serve", "digits:1", "--device", "tpu"])
    assert isinstance(result.exception, ConfigError)
    assert "Unknown device 'tpu'" in str(result.exception) and "cuda:N" in str(result.exception)


def test_a_missing_gpu_is_refused_before_serving() -> None:
    register_tiny("digits")
    missing = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result = runner.invoke(app, ["serve", "digits:1", "--device", f"cuda:{missing}"])
    assert isinstance(result.exception, ConfigError)
    assert "PyTorch sees" in str(result.exception)
    assert "--device cpu" in str(result.exception)
