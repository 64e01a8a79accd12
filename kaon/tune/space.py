"""Search spaces: what ``kaon tune`` may choose, and how a trial's choices become a spec.

The defaults suit small-image classification; a YAML file can override any part
(``kaon tune --space my_space.yaml``). ``suggest`` is a pure function of an Optuna trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kaon.errors import ConfigError

if TYPE_CHECKING:  # the platform's API imports SearchSpace: no optuna at its start-up
    import optuna

Item = TypeVar("Item")


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high or (self.log and self.low <= 0):
            raise ValueError(f"need 0 < low <= high for log ranges, low <= high otherwise "
                             f"(got {self.low}, {self.high})")
        return self


class IntRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    low: int = Field(ge=1)
    high: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self


Positive = Annotated[int, Field(gt=0)]
Choices = Annotated[list[Item], Field(min_length=1)]


class SearchSpace(BaseModel):
    """Every dimension of the search. Lists are categorical choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    families: Choices[Literal["mlp", "cnn", "resnet-small"]] = ["mlp", "cnn", "resnet-small"]
    mlp_depth: IntRange = IntRange(low=1, high=3)
    mlp_width: Choices[Positive] = [128, 256, 512]
    cnn_stages: IntRange = IntRange(low=2, high=3)
    cnn_width: Choices[Positive] = [16, 24, 32]
    resnet_width: Choices[Positive] = [8, 12, 16]
    resnet_blocks: IntRange = IntRange(low=1, high=2)
    dropout: Range = Range(low=0.0, high=0.4)
    optimizers: Choices[Literal["adam", "adamw", "sgd"]] = ["adam", "adamw", "sgd"]
    adam_lr: Range = Range(low=3e-4, high=1e-2, log=True)
    sgd_lr: Range = Range(low=1e-2, high=0.3, log=True)
    weight_decay: Range = Range(low=1e-6, high=1e-3, log=True)
    schedules: Choices[Literal["onecycle", "cosine", "constant"]] = ["onecycle", "cosine"]
    batch_sizes: Choices[Positive] = [64, 128, 256]
    random_shift: Choices[Annotated[int, Field(ge=0, le=8)]] = [0, 1, 2]
    hflip: Choices[bool] = [False, True]
    epochs: IntRange = IntRange(low=3, high=12)
    class_weight: Choices[Literal["none", "balanced"]] = ["none"]

    @property
    def max_epochs(self) -> int:
        return self.epochs.high


def check_cv_folds(folds: int | None) -> int | None:
    """The one rule on a number of folds that bounds alone cannot say (0 is off, 2-10 folds);
    shared by the search's config and the platform's tune requests."""
    if folds == 1:
        raise ValueError("1 fold is not cross-validation: give 0 (off) or 2 to 10 folds")
    return folds


def load_space(path: Path | None) -> SearchSpace:
    """Defaults, with the keys of a YAML file (if given) replacing theirs."""
    if path is None:
        return SearchSpace()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return SearchSpace.model_validate(raw)
    except FileNotFoundError:
        raise ConfigError(f"Search-space file {path} does not exist.",
                          hint="Check the path, or leave out --space for the default space "
                               "(a space file is YAML with keys such as families: [cnn]; "
                               "see docs/tune.md).") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"Search-space file {path} cannot be read as YAML: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.",
                          hint="Give a UTF-8 YAML file of keys such as families: [cnn].") from None
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"Invalid search space {path}:\n{problems}",
                          hint=f"Allowed keys: {', '.join(SearchSpace.model_fields)}.") from None


def _float(trial: optuna.Trial, name: str, r: Range) -> float:
    return trial.suggest_float(name, r.low, r.high, log=r.log) if r.low < r.high else r.low


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """The model, optimizer and training part of a spec, chosen by ``trial``."""
    family = trial.suggest_categorical("family", space.families)
    dropout = _float(trial, "dropout", space.dropout)
    model: dict[str, Any] = {"family": family, "dropout": dropout}
    if family == "mlp":
        depth = trial.suggest_int("mlp_depth", space.mlp_depth.low, space.mlp_depth.high)
        width = trial.suggest_categorical("mlp_width", space.mlp_width)
        model["hidden"] = [width // (2**i) for i in range(depth)]
    elif family == "cnn":
        stages = trial.suggest_int("cnn_stages", space.cnn_stages.low, space.cnn_stages.high)
        width = trial.suggest_categorical("cnn_width", space.cnn_width)
        model["channels"] = [width * 2**i for i in range(stages)]
    else:
        model["width"] = trial.suggest_categorical("resnet_width", space.resnet_width)
        blocks = trial.suggest_int("resnet_blocks", space.resnet_blocks.low,
                                   space.resnet_blocks.high)
        model["blocks"] = [blocks] * 3
    optimizer = trial.suggest_categorical("optimizer", space.optimizers)
    lr_range = space.sgd_lr if optimizer == "sgd" else space.adam_lr
    opt: dict[str, Any] = {
        "name": optimizer, "lr": _float(trial, f"{'sgd' if optimizer == 'sgd' else 'adam'}_lr",
                                        lr_range),
        "weight_decay": _float(trial, "weight_decay", space.weight_decay),
    }
    if optimizer == "sgd":
        opt["nesterov"] = True
    return {
        "model": model,
        "optimizer": opt,
        "schedule": {"name": trial.suggest_categorical("schedule", space.schedules)},
        "batch_size": trial.suggest_categorical("batch_size", space.batch_sizes),
        "epochs": trial.suggest_int("epochs", space.epochs.low, space.epochs.high),
        "augment": {"random_shift": trial.suggest_categorical("random_shift",
                                                              space.random_shift),
                    "hflip": trial.suggest_categorical("hflip", space.hflip)},
        "class_weight": trial.suggest_categorical("class_weight", space.class_weight),
    }


# Warm start: configurations that train well on small images in any domain, tried before the
# sampler's own (decision 0013). Epochs are left out: the search fits them to the trial cap.
PORTFOLIO: tuple[dict[str, Any], ...] = (
    {"family": "cnn", "cnn_stages": 3, "cnn_width": 32, "dropout": 0.1, "optimizer": "adamw",
     "adam_lr": 3e-3, "weight_decay": 1e-4, "schedule": "onecycle", "batch_size": 128,
     "random_shift": 0, "hflip": False,
     "class_weight": "none"},
    # SGD with Nesterov momentum and two blocks per stage: ahead of the AdamW, one-block
    # ResNet on validation on all three benchmark sets at equal epochs (decision 0018)
    {"family": "resnet-small", "resnet_width": 16, "resnet_blocks": 2, "dropout": 0.0,
     "optimizer": "sgd", "sgd_lr": 0.07, "weight_decay": 5e-6, "schedule": "onecycle",
     "batch_size": 64, "random_shift": 1, "hflip": False,
     "class_weight": "none"},
    {"family": "mlp", "mlp_depth": 2, "mlp_width": 512, "dropout": 0.2, "optimizer": "adam",
     "adam_lr": 1e-3, "weight_decay": 1e-5, "schedule": "onecycle", "batch_size": 128,
     "random_shift": 0, "hflip": False,
     "class_weight": "none"},
)
_FIELD = {"family": "families", "optimizer": "optimizers", "schedule": "schedules",
          "batch_size": "batch_sizes"}


def _project(value: Any, allowed: Any) -> Any:
    """``value`` moved into ``allowed``: clamped into a range, else the nearest (or first)
    choice."""
    if isinstance(allowed, Range | IntRange):
        return type(value)(min(max(value, allowed.low), allowed.high))
    if value in allowed:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(allowed, key=lambda choice: abs(choice - value))
    return allowed[0]


def portfolio(space: SearchSpace) -> list[dict[str, Any]]:
    """The warm-start configurations that ``space`` allows, each moved into it (distinct,
    without epochs); an entry whose family the space leaves out is dropped."""
    chosen: list[dict[str, Any]] = []
    for entry in PORTFOLIO:
        if entry["family"] not in space.families:
            continue
        params = {k: _project(v, getattr(space, _FIELD.get(k, k))) for k, v in entry.items()}
        lr_name, other = (("sgd_lr", "adam_lr") if params["optimizer"] == "sgd"
                          else ("adam_lr", "sgd_lr"))
        if lr_name not in params:  # the space swapped the optimizer: the middle of its range
            r = getattr(space, lr_name)
            params.pop(other, None)
            params[lr_name] = (r.low * r.high) ** 0.5 if r.log else (r.low + r.high) / 2
        if params not in chosen:
            chosen.append(params)
    return chosen


def to_spec(name: str, dataset: str, choice: dict[str, Any], seed: int = 0,
            loss: str = "cross_entropy") -> dict[str, Any]:
    """A full training spec (as a dict) from a trial's choices."""
    return {
        "name": name,
        "data": {"dataset": dataset, "augment": choice["augment"]},
        "model": choice["model"],
        "loss": loss,
        "class_weight": choice["class_weight"],
        "optimizer": choice["optimizer"],
        "schedule": choice["schedule"],
        "epochs": choice["epochs"],
        "batch_size": choice["batch_size"],
        "seed": seed,
        "register": None,
    }
