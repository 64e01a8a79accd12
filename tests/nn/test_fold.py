"""BatchNorm folded into the layer before it: fewer operations, the same outputs."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from kaon.nn import build_model, parse_spec
from kaon.nn.fold import count_batchnorms, fold_batchnorm


def trained_like(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, as after training; eval mode."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return module.eval()


def model(raw_model: dict[str, object]) -> nn.Module:
    torch.manual_seed(0)
    spec = parse_spec({"name": "m", "data": {"dataset": "mnist"}, "model": raw_model})
    return trained_like(build_model(spec, (1, 28, 28), 10))


@pytest.mark.parametrize("raw_model", [
    {"family": "resnet-small", "width": 8, "blocks": [1, 1]},
    {"family": "cnn", "channels": [8, 16]},
    {"layers": [{"type": "conv2d", "filters": 8, "kernel_size": 3}, {"type": "batchnorm"},
                {"type": "activation", "name": "relu"}, {"type": "flatten"},
                {"type": "dense", "units": 16}, {"type": "batchnorm"},
                {"type": "dense", "units": 10}]},
], ids=["resnet", "cnn", "conv-and-dense-layers"])
def test_every_batchnorm_after_a_layer_is_folded_and_the_outputs_stay(
        raw_model: dict[str, object]) -> None:
    original = model(raw_model)
    assert count_batchnorms(original) > 0
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    folded = fold_batchnorm(original, x[:2])
    assert count_batchnorms(folded) == 0
    assert count_batchnorms(original) > 0  # folded on a copy
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), original(x), rtol=1e-4, atol=1e-5)


def test_a_model_without_batchnorm_is_served_as_it_is() -> None:
    mlp = model({"family": "mlp", "hidden": [32]})
    assert fold_batchnorm(mlp, torch.zeros(2, 1, 28, 28)) is mlp


class DataDependent(nn.Module):
    """Control flow on values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y if y.sum() > 0 else -y


def test_a_model_that_cannot_be_traced_is_kept_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    module = DataDependent().eval()
    with caplog.at_level(logging.WARNING, logger="kaon.nn.fold"):
        assert fold_batchnorm(module, torch.randn(2, 1, 28, 28)) is module
    assert "BatchNorm not folded" in caplog.text


def test_folding_needs_eval_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)),
                       torch.zeros(1, 1, 8, 8))
