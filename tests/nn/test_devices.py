import pytest
import torch

from kaon.errors import ConfigError
from kaon.nn.devices import resolve_device


def test_auto_picks_the_gpu_only_when_there_is_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_names_are_refused_with_the_choices(name: str) -> None:
    with pytest.raises(ConfigError, match="Unknown device") as err:
        resolve_device(name)
    assert "cuda:N" in (err.value.hint or "")


def test_a_gpu_that_is_not_there_is_refused_before_any_work() -> None:
    missing = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match="PyTorch sees") as err:
        resolve_device(f"cuda:{missing}")
    assert "--device cpu" in (err.value.hint or "")
