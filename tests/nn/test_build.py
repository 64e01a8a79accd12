"""Spec → ``torch.nn.Module``: layer lists, named families and the output-size check."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from kaon.errors import ConfigError
from kaon.nn import build_model, count_parameters, parse_spec
from kaon.nn.spec import TrainSpec

MNIST = (1, 28, 28)


def spec(model: dict[str, Any], **extra: Any) -> TrainSpec:
    return parse_spec({"name": "m", "data": {"dataset": "mnist"}, "model": model, **extra})


def layers(*items: dict[str, Any], **extra: Any) -> TrainSpec:
    return spec({"layers": list(items)}, **extra)


def module_types(model: nn.Module) -> list[type[nn.Module]]:
    return [type(m) for m in model.children()]


# ---- layer lists --------------------------------------------------------------------------------
def test_dense_layers_infer_their_input_sizes() -> None:
    model = build_model(layers({"type": "dense", "units": 32, "activation": "relu"},
                               {"type": "dense", "units": 10}), MNIST, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 10)]
    assert model(torch.zeros(3, *MNIST)).shape == (3, 10)


def test_a_last_softmax_is_left_to_the_loss_so_the_model_returns_logits() -> None:
    model = build_model(layers({"type": "dense", "units": 10, "activation": "softmax"}),
                        MNIST, 10)
    assert module_types(model) == [nn.Flatten, nn.Linear]
    out = model(torch.randn(4, *MNIST))
    assert not torch.allclose(out.sum(1), torch.ones(4))


def test_a_last_sigmoid_activation_layer_is_left_to_the_loss() -> None:
    model = build_model(layers({"type": "dense", "units": 1}, {"type": "activation",
                                                               "name": "sigmoid"},
                               loss="binary_cross_entropy"), MNIST, 2)
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())


def test_a_softmax_before_the_last_layer_is_kept() -> None:
    model = build_model(layers({"type": "dense", "units": 16, "activation": "softmax"},
                               {"type": "dense", "units": 10}), MNIST, 10)
    assert any(isinstance(m, nn.Softmax) for m in model.modules())


def test_conv_same_padding_keeps_the_size_and_valid_padding_shrinks_it() -> None:
    same = build_model(layers({"type": "conv2d", "filters": 4, "kernel_size": 5},
                              {"type": "flatten"}, {"type": "dense", "units": 10}), MNIST, 10)
    valid = build_model(layers({"type": "conv2d", "filters": 4, "kernel_size": 5,
                                "padding": "valid"},
                               {"type": "flatten"}, {"type": "dense", "units": 10}), MNIST, 10)
    assert next(m for m in same.modules() if isinstance(m, nn.Linear)).in_features == 4 * 28 * 28
    assert next(m for m in valid.modules() if isinstance(m, nn.Linear)).in_features == 4 * 24 * 24


def test_dense_after_conv_flattens_implicitly() -> None:
    model = build_model(layers({"type": "conv2d", "filters": 4}, {"type": "maxpool2d"},
                               {"type": "dense", "units": 10}), MNIST, 10)
    assert module_types(model) == [nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
    assert model(torch.zeros(2, *MNIST)).shape == (2, 10)


def test_conv_with_batchnorm_has_no_bias() -> None:
    model = build_model(layers({"type": "conv2d", "filters": 4, "batchnorm": True,
                                "activation": "relu"},
                               {"type": "global_avg_pool"}, {"type": "dense", "units": 10}),
                        MNIST, 10)
    conv = model[0]
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(model[2], nn.ReLU)


def test_batchnorm_layer_matches_the_shape_it_follows() -> None:
    model = build_model(layers({"type": "conv2d", "filters": 4}, {"type": "batchnorm"},
                               {"type": "dense", "units": 8}, {"type": "batchnorm"},
                               {"type": "dense", "units": 10}), MNIST, 10)
    norms = [type(m) for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    assert norms == [nn.BatchNorm2d, nn.BatchNorm1d]


def test_conv_after_dense_is_a_config_error_naming_the_layer() -> None:
    with pytest.raises(ConfigError, match=r"model\.layers\.1 \(conv2d\) needs an image input"):
        build_model(layers({"type": "dense", "units": 10}, {"type": "conv2d", "filters": 3}),
                    MNIST, 10)


def test_pooling_an_input_away_is_a_config_error_naming_the_layer() -> None:
    with pytest.raises(ConfigError, match=r"model\.layers\.\d \(maxpool2d\)"):
        build_model(layers(*[{"type": "maxpool2d", "pool": 4}] * 3,
                           {"type": "dense", "units": 10}), MNIST, 10)


def test_last_layer_with_the_wrong_width_says_what_the_task_needs() -> None:
    with pytest.raises(ConfigError, match=r"gives \(5,\) outputs but the task needs 10") as info:
        build_model(layers({"type": "dense", "units": 5}), MNIST, 10)
    assert info.value.hint == "Make the last layer 'dense' with units: 10."


def test_binary_cross_entropy_on_two_classes_needs_one_output() -> None:
    bce = {"loss": "binary_cross_entropy"}
    model = build_model(layers({"type": "dense", "units": 1}, **bce), MNIST, 2)
    assert model(torch.zeros(2, *MNIST)).shape == (2, 1)
    with pytest.raises(ConfigError, match="task needs 1"):
        build_model(layers({"type": "dense", "units": 2}, **bce), MNIST, 2)


def test_built_models_are_returned_in_training_mode() -> None:
    model = build_model(layers({"type": "dropout", "rate": 0.5}, {"type": "dense", "units": 10}),
                        MNIST, 10)
    assert model.training


# ---- named families -----------------------------------------------------------------------------
SMALL: dict[str, dict[str, object]] = {"mlp": {"hidden": [16]}, "cnn": {"channels": [4, 8]},
                                       "resnet-small": {"width": 4}}


def test_a_key_of_another_family_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="channels"):
        spec({"family": "mlp", "channels": [4]})

@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet-small"])
@pytest.mark.parametrize(("shape", "classes"), [((1, 28, 28), 10), ((3, 32, 32), 7)])
def test_each_family_maps_images_to_one_logit_per_class(
        family: str, shape: tuple[int, int, int], classes: int) -> None:
    model = build_model(spec({"family": family, **SMALL[family]}), shape, classes)
    assert model.eval()(torch.zeros(2, *shape)).shape == (2, classes)


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet-small"])
def test_each_family_gives_one_logit_for_binary_cross_entropy(family: str) -> None:
    model = build_model(spec({"family": family, **SMALL[family]},
                             loss="binary_cross_entropy"), MNIST, 2)
    assert model.eval()(torch.zeros(2, *MNIST)).shape == (2, 1)


def test_mlp_family_uses_the_hidden_widths() -> None:
    model = build_model(spec({"family": "mlp", "hidden": [32, 16]}), MNIST, 10)
    assert count_parameters(model) == (784 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)


def test_family_dropout_adds_a_dropout_layer() -> None:
    with_dropout = build_model(spec({"family": "cnn", "channels": [4], "dropout": 0.3}), MNIST, 10)
    without = build_model(spec({"family": "cnn", "channels": [4]}), MNIST, 10)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in with_dropout.modules())
    assert not any(isinstance(m, nn.Dropout) for m in without.modules())


def test_resnet_small_halves_resolution_per_stage_and_doubles_width() -> None:
    model = build_model(spec({"family": "resnet-small", "width": 4, "blocks": [1, 1, 1]}),
                        MNIST, 10)
    final = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert final.in_features == 4 * 2**2


def test_a_model_too_large_is_refused_before_any_memory_is_taken() -> None:
    huge = layers({"type": "flatten"}, {"type": "dense", "units": 10**9},
                  {"type": "dense", "units": 10})
    with pytest.raises(ConfigError, match="795,000,000,010 parameters"):
        build_model(huge, (1, 28, 28), 10)  # 3 TB of weights: counted on the meta device
