"""The training spec: strict validation, helpful errors, YAML files and ``--set`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kaon.errors import ConfigError
from kaon.nn.spec import FamilyModel, LayersModel, TrainSpec, apply_overrides, load_spec, parse_spec

MINIMAL: dict[str, Any] = {
    "name": "mnist-mlp",
    "data": {"dataset": "mnist"},
    "model": {"layers": [{"type": "dense", "units": 64, "activation": "relu"},
                         {"type": "dense", "units": 10, "activation": "softmax"}]},
}


def spec_with(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(MINIMAL)
    raw.update(changes)
    return raw


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(raw)
    return info.value.message


# ---- valid specs --------------------------------------------------------------------------------
def test_a_minimal_spec_gets_documented_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert isinstance(spec.model, LayersModel)
    assert (spec.loss, spec.epochs, spec.batch_size, spec.seed) == ("cross_entropy", 5, 64, 0)
    assert (spec.optimizer.name, spec.optimizer.lr) == ("adam", 1e-3)
    assert spec.schedule.name == "constant"
    assert spec.early_stopping is None
    assert spec.register_ is not None and spec.register_.name is None


def test_a_model_with_a_family_key_is_a_named_family() -> None:
    spec = parse_spec(spec_with(model={"family": "cnn", "channels": [8, 16]}))
    assert isinstance(spec.model, FamilyModel)
    assert spec.model.channels == [8, 16]


def test_register_null_means_do_not_register() -> None:
    assert parse_spec(spec_with(register=None)).register_ is None


def test_json_dump_of_a_spec_parses_back_to_the_same_spec() -> None:
    spec = parse_spec(spec_with(register={"name": "other", "alias": "staging"},
                                model={"family": "resnet-small", "blocks": [2, 2]}))
    dumped = spec.model_dump(mode="json")
    assert "register" in dumped and "register_" not in dumped
    assert parse_spec(dumped) == spec


# ---- unknown keys name the key and what is allowed ---------------------------------------------
def test_unknown_top_level_key_is_named_with_the_allowed_keys() -> None:
    message = config_error(spec_with(epochz=3))
    assert "epochz: unknown key" in message
    assert "allowed: batch_size, class_weight, data, early_stopping, epochs" in message
    assert "register" in message  # the key a file uses, not the Python attribute register_


def test_unknown_key_inside_a_layer_is_named_by_its_dotted_path() -> None:
    raw = spec_with(model={"layers": [{"type": "dense", "unitz": 10}]})
    message = config_error(raw)
    assert "model.layers.0.unitz: unknown key (allowed: activation, type, units)" in message


def test_unknown_key_inside_a_conv_layer_lists_the_conv_keys() -> None:
    raw = spec_with(model={"layers": [{"type": "conv2d", "filter": 8}]})
    message = config_error(raw)
    assert ("model.layers.0.filter: unknown key (allowed: activation, batchnorm, filters, "
            "kernel_size, padding, stride, type)") in message


def test_unknown_key_in_a_family_model_lists_the_family_keys() -> None:
    message = config_error(spec_with(model={"family": "mlp", "hiddn": [64]}))
    assert "model.hiddn: unknown key" in message
    assert "hidden" in message and "channels" in message


@pytest.mark.parametrize(("section", "value", "where", "allowed"), [
    ("optimizer", {"lrr": 0.1}, "optimizer.lrr", "lr, momentum, name, nesterov, weight_decay"),
    ("data", {"dataset": "mnist", "normalize": {"meen": [0.1]}}, "data.normalize.meen",
     "mean, std"),
    ("early_stopping", {"patience": 2, "monitr": "val_loss"}, "early_stopping.monitr",
     "min_delta, monitor, patience"),
    ("register", {"nme": "x"}, "register.nme", "alias, name"),
])
def test_unknown_nested_key_is_named_with_its_section_keys(
        section: str, value: dict[str, Any], where: str, allowed: str) -> None:
    message = config_error(spec_with(**{section: value}))
    assert f"{where}: unknown key (allowed: {allowed})" in message


def test_unknown_layer_type_lists_the_layer_types() -> None:
    message = config_error(spec_with(model={"layers": [{"type": "dens", "units": 10}]}))
    assert "model.layers.0" in message and "'dens'" in message
    assert "'dense'" in message and "'conv2d'" in message


def test_unknown_family_lists_the_families() -> None:
    message = config_error(spec_with(model={"family": "vgg"}))
    assert "model.family" in message and "'mlp', 'cnn' or 'resnet-small'" in message


@pytest.mark.parametrize(("change", "where"), [
    ({"name": "Has Spaces"}, "name"),
    ({"epochs": 0}, "epochs"),
    ({"optimizer": {"lr": -1}}, "optimizer.lr"),
    ({"data": {"dataset": "mnist", "val_fraction": 1.5}}, "data.val_fraction"),
    ({"loss": "hinge"}, "loss"),
])
def test_out_of_range_values_are_refused_naming_the_field(change: dict[str, Any],
                                                          where: str) -> None:
    assert f"\n  {where}:" in config_error(spec_with(**change))


def test_register_alias_must_be_a_valid_name() -> None:
    assert "register.alias" in config_error(spec_with(register={"alias": "Production!"}))


def test_register_alias_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigError):
        parse_spec(spec_with(register={"alias": "prod\n"}))


def test_spec_errors_carry_a_hint_and_the_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec_with(epochz=1), source="my.yaml")
    assert "Invalid training spec my.yaml" in info.value.message
    assert info.value.hint and "docs/spec.md" in info.value.hint


# ---- --set overrides ----------------------------------------------------------------------------
def test_overrides_set_nested_values_parsed_as_yaml() -> None:
    raw = apply_overrides(spec_with(), ["optimizer.lr=0.01", "epochs=3",
                                        "data.normalize.mean=[0.5]"])
    spec = parse_spec(raw)
    assert spec.optimizer.lr == 0.01
    assert spec.epochs == 3
    assert spec.data.normalize.mean == [0.5]


def test_override_with_a_list_index_changes_that_layer() -> None:
    spec = parse_spec(apply_overrides(spec_with(), ["model.layers.0.units=32"]))
    assert isinstance(spec.model, LayersModel)
    assert [layer.units for layer in spec.model.layers] == [32, 10]  # type: ignore[union-attr]


def test_override_with_an_index_past_the_end_names_the_list_length() -> None:
    with pytest.raises(ConfigError, match=r"model\.layers has 2 items; '5' is not one of them"):
        apply_overrides(spec_with(), ["model.layers.5.units=32"])


def test_override_without_equals_sign_is_refused_with_an_example() -> None:
    with pytest.raises(ConfigError, match="is not key=value") as info:
        apply_overrides(spec_with(), ["epochs"])
    assert info.value.hint and "--set optimizer.lr=0.01" in info.value.hint


def test_override_of_a_misspelt_key_is_caught_by_validation() -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.lrr: unknown key"):
        parse_spec(apply_overrides(spec_with(), ["optimizer.lrr=0.1"]))


# ---- spec files ---------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


YAML_SPEC = """\
name: mnist-cnn
data: {dataset: mnist, limit: 500}
model:
  layers:
    - {type: conv2d, filters: 8, activation: relu}
    - {type: maxpool2d}
    - {type: dense, units: 10}
epochs: 2
"""


def test_load_spec_reads_yaml_and_applies_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "spec.yaml", YAML_SPEC)
    spec = load_spec(path, ["model.layers.0.filters=16", "epochs=1"])
    assert isinstance(spec, TrainSpec)
    assert spec.name == "mnist-cnn" and spec.data.limit == 500 and spec.epochs == 1
    assert spec.model.layers[0].filters == 16  # type: ignore[union-attr]


def test_load_spec_names_the_file_in_validation_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", YAML_SPEC + "epoch: 3\n")
    with pytest.raises(ConfigError, match=r"Invalid training spec .*bad\.yaml") as info:
        load_spec(path)
    assert "epoch: unknown key" in info.value.message


def test_load_spec_of_a_missing_file_says_it_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_load_spec_refuses_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(write(tmp_path / "broken.yaml", "name: [unclosed\n"))


def test_load_spec_refuses_a_top_level_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_spec(write(tmp_path / "list.yaml", "- name: x\n"))


# ---- cross-validation folds ----------------------------------------------------------------------
def test_a_held_out_fold_must_be_one_of_the_folds() -> None:
    message = config_error(spec_with(data={"dataset": "mnist", "cv_folds": 3, "cv_fold": 3}))
    assert "cv_fold 3 must be below cv_folds 3" in message


def test_cross_validation_and_training_on_val_exclude_each_other() -> None:
    message = config_error(spec_with(data={"dataset": "mnist", "cv_folds": 3,
                                           "train_on_val": True}))
    assert "exclude each other" in message


def test_a_zero_std_a_seed_past_32_bits_and_a_bad_set_value_are_config_errors() -> None:
    assert "std" in config_error(spec_with(data={"dataset": "mnist",
                                                 "normalize": {"std": [0.0]}}))
    assert "seed" in config_error(spec_with(seed=10**23))
    assert "seed" in config_error(spec_with(seed=-1))
    with pytest.raises(ConfigError, match="not YAML"):
        apply_overrides(copy.deepcopy(MINIMAL), ["epochs=["])
