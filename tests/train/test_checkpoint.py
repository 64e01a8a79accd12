"""Training checkpoints: one safetensors file holding model, Adam state and RNG states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kaon.errors import ArtifactError
from kaon.registry.artifacts import save_weights
from kaon.train.checkpoint import CHECKPOINT, TrainState, load_checkpoint, save_checkpoint

X = torch.linspace(-1, 1, 16 * 6).view(16, 6)
Y = torch.arange(16) % 3


class Run:
    """A tiny run: an MLP with dropout and batchnorm, Adam, one-cycle LR, a seeded shuffling RNG."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                   nn.Dropout(0.5), nn.Linear(8, 3))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=0.1,
                                                             total_steps=10)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0

    def steps(self, n: int) -> None:
        for _ in range(n):
            batch = torch.randperm(16, generator=self.generator)[:4]
            loss = nn.functional.cross_entropy(self.model(X[batch]), Y[batch])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
        self.epoch += 1

    def state(self) -> TrainState:
        return TrainState(epoch=self.epoch, model=self.model.state_dict(),
                          optimizer=self.optimizer.state_dict(),
                          scheduler=self.scheduler.state_dict(),
                          generator=self.generator.get_state(), cpu_rng=torch.get_rng_state(),
                          extra={"history": [{"loss": 1.25}], "best": 0.5})

    def restore(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        assert state.scheduler is not None
        self.scheduler.load_state_dict(state.scheduler)
        self.generator.set_state(state.generator)
        torch.set_rng_state(state.cpu_rng)
        self.epoch = state.epoch


def saved_run(tmp_path: Path) -> tuple[Run, Path]:
    run = Run()
    run.steps(3)
    path = tmp_path / "run" / CHECKPOINT
    save_checkpoint(path, run.state())
    return run, path


def test_model_weights_and_buffers_round_trip_exactly(tmp_path: Path) -> None:
    run, path = saved_run(tmp_path)
    loaded = load_checkpoint(path).model
    assert loaded.keys() == run.model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in run.model.state_dict().items())


def test_adam_moments_and_step_counts_round_trip(tmp_path: Path) -> None:
    run, path = saved_run(tmp_path)
    original = run.optimizer.state_dict()
    loaded = load_checkpoint(path).optimizer
    assert loaded["state"].keys() == original["state"].keys()
    for pid, entries in original["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(loaded["state"][pid][key], entries[key]), (pid, key)
    group, saved_group = original["param_groups"][0], loaded["param_groups"][0]
    assert {k: saved_group[k] for k in ("lr", "eps", "params", "initial_lr", "max_lr")} == {
        k: group[k] for k in ("lr", "eps", "params", "initial_lr", "max_lr")}
    assert tuple(saved_group["betas"]) == group["betas"]


def test_epoch_scheduler_and_extra_bookkeeping_round_trip(tmp_path: Path) -> None:
    run, path = saved_run(tmp_path)
    state = load_checkpoint(path)
    assert state.epoch == 1
    assert state.scheduler == run.scheduler.state_dict()
    assert state.extra == {"history": [{"loss": 1.25}], "best": 0.5}


def test_rng_states_round_trip(tmp_path: Path) -> None:
    run, path = saved_run(tmp_path)
    expected_shuffle = torch.randperm(16, generator=run.generator)
    expected_noise = torch.rand(5)
    state = load_checkpoint(path)
    torch.set_rng_state(state.cpu_rng)
    assert torch.equal(torch.rand(5), expected_noise)
    generator = torch.Generator().manual_seed(9)
    generator.set_state(state.generator)
    assert torch.equal(torch.randperm(16, generator=generator), expected_shuffle)


def test_resuming_from_a_checkpoint_continues_exactly_like_an_uninterrupted_run(
        tmp_path: Path) -> None:
    straight = Run()
    straight.steps(3)
    straight.steps(3)

    interrupted, path = saved_run(tmp_path)
    del interrupted
    resumed = Run(seed=123)  # fresh process: different initial weights and RNG
    resumed.restore(load_checkpoint(path))
    resumed.steps(3)

    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_saving_again_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    run, path = saved_run(tmp_path)
    run.steps(1)
    save_checkpoint(path, run.state())
    assert load_checkpoint(path).epoch == 2
    assert [p.name for p in path.parent.iterdir()] == [CHECKPOINT]


def test_plain_weights_are_not_a_training_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_weights(Run().model.state_dict(), path, metadata={"kaon.model": "m:1"})
    with pytest.raises(ArtifactError, match="holds no Kaon training state") as info:
        load_checkpoint(path)
    assert info.value.hint and "checkpoint.safetensors" in info.value.hint


def test_a_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    run = Run()
    pt = tmp_path / "checkpoint.pt"
    torch.save({"model": run.model.state_dict()}, pt)
    with pytest.raises(ArtifactError, match=r"Kaon loads only \.safetensors"):
        load_checkpoint(pt)
    renamed = pt.rename(tmp_path / CHECKPOINT)
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        load_checkpoint(renamed)
