"""Training checkpoints as one safetensors file: tensors in the body, the rest as JSON metadata.

Model weights, optimizer moments and RNG states are tensors; step counters, param groups and
scheduler state are JSON. Nothing is pickled, so a checkpoint is as safe to load as weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kaon.errors import ArtifactError
from kaon.registry.artifacts import check_safetensors

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where it stopped."""

    epoch: int  # epochs completed
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    generator: torch.Tensor  # shuffling / augmentation RNG
    cpu_rng: torch.Tensor  # global RNG (dropout)
    extra: dict[str, Any]  # early-stopping bookkeeping, history


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write atomically: a killed process leaves the previous checkpoint intact."""
    tensors: dict[str, torch.Tensor] = {f"model/{k}": v for k, v in state.model.items()}
    opt_state: dict[str, dict[str, Any]] = {}
    for pid, entries in state.optimizer["state"].items():
        opt_state[str(pid)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = value
                opt_state[str(pid)][key] = {"tensor": f"optim/{pid}/{key}"}
            else:
                opt_state[str(pid)][key] = value
    tensors["rng/generator"] = state.generator
    tensors["rng/cpu"] = state.cpu_rng
    meta = {
        "epoch": state.epoch,
        "optimizer": {"state": opt_state, "param_groups": state.optimizer["param_groups"]},
        "scheduler": state.scheduler,
        "extra": state.extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={"kaon.train_state": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> TrainState:
    check_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("kaon.train_state")
        if raw is None:
            raise ArtifactError(f"{path} holds no Kaon training state.",
                                hint="Resume only from a run's own checkpoint.safetensors.")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    try:
        return _state(json.loads(raw), tensors)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(
            f"{path} holds a damaged training state ({type(exc).__name__}: {exc}).",
            hint="Start the run again with `kaon train SPEC`.") from None


def _state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TrainState:
    model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    opt_state: dict[int, dict[str, Any]] = {}
    for pid, entries in meta["optimizer"]["state"].items():
        opt_state[int(pid)] = {
            key: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
            for key, v in entries.items()
        }
    return TrainState(
        epoch=int(meta["epoch"]), model=model,
        optimizer={"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]},
        scheduler=meta["scheduler"], generator=tensors["rng/generator"],
        cpu_rng=tensors["rng/cpu"], extra=meta["extra"],
    )
