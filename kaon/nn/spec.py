"""The training spec: one declarative, strictly validated document per run.

Every model here uses ``extra="forbid"``: a misspelt key is an error naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from kaon.errors import ConfigError
from kaon.names import NAME_PATTERN, is_valid_name
from kaon.specfile import read_spec_file

PositiveInt = Annotated[int, Field(gt=0)]
Activation = Literal["relu", "gelu", "tanh", "sigmoid", "softmax", "silu", "leaky_relu", "none"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              serialize_by_alias=True)


# ---- layers (Keras Sequential in spirit) ------------------------------------------------------
class Flatten(Strict):
    type: Literal["flatten"]


class Dense(Strict):
    type: Literal["dense"]
    units: int = Field(gt=0)
    activation: Activation = "none"


class Conv2d(Strict):
    type: Literal["conv2d"]
    filters: int = Field(gt=0)
    kernel_size: int = Field(default=3, gt=0)
    stride: int = Field(default=1, gt=0)
    padding: int | Literal["same", "valid"] = "same"
    activation: Activation = "none"
    batchnorm: bool = False


class MaxPool2d(Strict):
    type: Literal["maxpool2d"]
    pool: int = Field(default=2, gt=0)


class AvgPool2d(Strict):
    type: Literal["avgpool2d"]
    pool: int = Field(default=2, gt=0)


class GlobalAvgPool(Strict):
    type: Literal["global_avg_pool"]


class BatchNorm(Strict):
    type: Literal["batchnorm"]


class Dropout(Strict):
    type: Literal["dropout"]
    rate: float = Field(ge=0.0, lt=1.0)


class ActivationLayer(Strict):
    type: Literal["activation"]
    name: Activation


Layer = Annotated[
    Flatten | Dense | Conv2d | MaxPool2d | AvgPool2d | GlobalAvgPool | BatchNorm | Dropout
    | ActivationLayer,
    Field(discriminator="type"),
]


# ---- model: a layer list or a named family ---------------------------------------------------
class LayersModel(Strict):
    layers: list[Layer] = Field(min_length=1)


class FamilyModel(Strict):
    family: Literal["mlp", "cnn", "resnet-small"]
    hidden: list[PositiveInt] = Field(default=[128], description="mlp: hidden layer widths")
    channels: list[PositiveInt] = Field(default=[32, 64], min_length=1,
                                        description="cnn: conv widths, one per stage")
    width: int = Field(default=16, gt=0, description="resnet-small: stem width")
    blocks: list[PositiveInt] = Field(default=[1, 1, 1], min_length=1,
                                      description="resnet-small: blocks per stage")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batchnorm: bool = True

    @model_validator(mode="after")
    def _keys_belong_to_family(self) -> FamilyModel:
        own = {"mlp": {"hidden"}, "cnn": {"channels", "batchnorm"},
               "resnet-small": {"width", "blocks"}}
        # keys set to a value other than their default (a stored spec carries all defaults)
        changed = {k for k in self.model_fields_set
                   if getattr(self, k) != type(self).model_fields[k].default}
        foreign = (changed - {"family", "dropout"}) - own[self.family]
        if foreign:
            raise ValueError(f"{', '.join(sorted(foreign))} do(es) not apply to family "
                             f"{self.family!r} (its keys: {', '.join(sorted(own[self.family]))}, "
                             "dropout)")
        return self


# ---- data, optimisation, schedule ------------------------------------------------------------
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what torch and numpy take


class Normalize(Strict):
    mean: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, description="per channel, in [0,1] units")
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(
        default=None, description="per channel, > 0 (inputs are divided by it)")


class Augment(Strict):
    random_shift: int = Field(default=0, ge=0, le=8, description="max pixels of random shift")
    hflip: bool = False


class DataSpec(Strict):
    dataset: str
    val_fraction: float | None = Field(
        default=None, ge=0.0, lt=1.0,
        description="hold out this share of train; default: the dataset's own val split or 0.1",
    )
    normalize: Normalize = Normalize()
    augment: Augment = Augment()
    limit: int | None = Field(default=None, gt=0, description="use the first N train images")
    test_fraction: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="hold out this share of train as the test split (datasets without one)")
    train_on_val: bool = Field(
        default=False, description="fold the validation images into training (final refits)")
    cv_folds: int | None = Field(
        default=None, ge=2, le=10,
        description="cross-validation: pool train and val, hold out fold cv_fold of this many")
    cv_fold: int = Field(default=0, ge=0, description="which fold is held out (0-based)")

    @model_validator(mode="after")
    def _one_fold_of_the_folds(self) -> DataSpec:
        if self.cv_folds is not None and self.cv_fold >= self.cv_folds:
            raise ValueError(f"cv_fold {self.cv_fold} must be below cv_folds {self.cv_folds}")
        if self.cv_folds is not None and self.train_on_val:
            raise ValueError("cv_folds and train_on_val exclude each other")
        return self


class Optimizer(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    nesterov: bool = False


class Schedule(Strict):
    name: Literal["constant", "cosine", "onecycle", "step"] = "constant"
    step_size: int = Field(default=1, gt=0, description="step: epochs between decays")
    gamma: float = Field(default=0.1, gt=0, le=1)
    max_lr: float | None = Field(default=None, gt=0, description="onecycle peak; default: lr")
    warmup: float = Field(default=0.25, gt=0, lt=1, description="onecycle share of warm-up")


class EarlyStopping(Strict):
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(default=3, gt=0)
    min_delta: float = Field(default=0.0, ge=0)


class Register(Strict):
    name: str | None = Field(default=None, pattern=NAME_PATTERN,
                             description="default: the spec's name")
    alias: str | None = None

    @field_validator("alias")
    @classmethod
    def _alias(cls, v: str | None) -> str | None:
        if v is not None and not is_valid_name(v):
            raise ValueError(f"alias {v!r} must match {NAME_PATTERN}")
        return v


def _model_kind(value: Any) -> str:
    """A model section is a named family when it has a ``family`` key, else a layer list."""
    if isinstance(value, dict):
        return "family" if "family" in value else "layers"
    return "family" if isinstance(value, FamilyModel) else "layers"


class TrainSpec(Strict):
    """A complete description of one training run."""

    name: str = Field(pattern=NAME_PATTERN)
    data: DataSpec
    model: Annotated[
        Annotated[LayersModel, Tag("layers")] | Annotated[FamilyModel, Tag("family")],
        Discriminator(_model_kind),
    ]
    loss: Literal["cross_entropy", "binary_cross_entropy", "mse"] = "cross_entropy"
    class_weight: Literal["none", "balanced"] = Field(
        default="none", description="balanced: weigh each class by n / (classes x its count)")
    optimizer: Optimizer = Optimizer()
    schedule: Schedule = Schedule()
    epochs: int = Field(default=5, gt=0, le=1000)
    batch_size: int = Field(default=64, gt=0, le=65536)
    eval_batch_size: int = Field(default=1024, gt=0)
    early_stopping: EarlyStopping | None = None
    seed: Seed = 0
    register_: Register | None = Field(default=Register(), alias="register",
                                       description="register the result; null to skip")
    parent: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}([:@].+)?$",
                               description="model this one derives from (lineage)")


# ---- loading and overriding ------------------------------------------------------------------
def _format_error(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        where = _where(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key{_allowed_keys(err['loc'])}")
        elif err["type"] in ("literal_error", "union_tag_invalid"):
            lines.append(f"  {where}: {err['msg']}")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError(
        f"Invalid training spec{' ' + source if source else ''}:\n" + "\n".join(lines),
        hint="Fix the field(s) above; see docs/spec.md for every key and its allowed values.",
    )


def _where(loc: tuple[Any, ...]) -> str:
    """The dotted path a user wrote, without pydantic's union tags."""
    parts: list[str] = []
    prev: Any = None
    for part in loc:
        tag = (prev == "model" and part in _MODEL_KINDS) or (
            isinstance(prev, int) and part in _LAYER_TYPES)
        if not tag:
            parts.append(str(part))
        prev = part
    return ".".join(parts) or "(top level)"


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    """Name the keys allowed where an unknown key was found."""
    model: type[BaseModel] | None = TrainSpec
    for part in loc[:-1]:
        if model is None or not isinstance(part, str):
            continue
        field = _fields(model).get(part)
        if field is None:
            # a tagged-union member: pydantic puts its tag in the location
            model = _LAYER_TYPES.get(part) or _MODEL_KINDS.get(part)
            continue
        model = _model_of(field.annotation)
    if model is None:
        return ""
    return f" (allowed: {', '.join(sorted(_fields(model)))})"


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """Fields by the key a spec file uses (the alias where one is set)."""
    return {f.alias or name: f for name, f in model.model_fields.items()}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


_LAYER_TYPES: dict[str, type[BaseModel]] = {
    "flatten": Flatten, "dense": Dense, "conv2d": Conv2d, "maxpool2d": MaxPool2d,
    "avgpool2d": AvgPool2d, "global_avg_pool": GlobalAvgPool, "batchnorm": BatchNorm,
    "dropout": Dropout, "activation": ActivationLayer,
}
_MODEL_KINDS: dict[str, type[BaseModel]] = {"layers": LayersModel, "family": FamilyModel}


def parse_spec(raw: dict[str, Any], source: str = "") -> TrainSpec:
    """Validate a spec given as a dict; raise :class:`ConfigError` naming each bad field."""
    try:
        return TrainSpec.model_validate(raw)
    except ValidationError as exc:
        raise _format_error(exc, source) from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> TrainSpec:
    """Read a YAML/JSON spec file and apply ``key.sub=value`` overrides (``--set``)."""
    raw = read_spec_file(path)
    return parse_spec(apply_overrides(raw, overrides or []), source=str(path))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` assignments; values are parsed as YAML scalars/lists."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not key=value.",
                              hint="Example: --set optimizer.lr=0.01 --set epochs=3")
        node: Any = raw
        parts = key.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {item!r}: {'.'.join(parts[:depth])} has "
                                      f"{len(node)} items; {part!r} is not one of them.")
                index: Any = int(part)
            else:
                index = part
            if last:
                try:
                    node[index] = yaml.safe_load(value)
                except yaml.YAMLError as exc:
                    raise ConfigError(f"--set {item!r}: the value is not YAML ({exc}).",
                                      hint="Quote strings; lists are [1, 2], mappings "
                                           "{a: 1}.") from None
            else:
                if not isinstance(node[index] if isinstance(node, list) else node.get(index),
                                  dict | list):
                    node[index] = {}
                node = node[index]
    return raw
