"""The deadline callback: a run that would end late is shortened, and its learning-rate
schedule re-planned over the epochs left, so it still anneals; resume keeps the plan."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kaon import registry
from kaon.train import TrainingInterrupted, resume, train
from kaon.train.callbacks import Deadline
from kaon.train.loop import Trainer
from kaon.train.runs import get_run
from tests.train.test_train import StopAfter, _run_ids, registered_weights, small_spec


def one_second_epochs(at: float = 5.5) -> Deadline:
    """Epoch n ends at n seconds on the deadline's clock: of 10 planned epochs, the deadline
    at 5.5 s leaves 5. (The first epoch's own timing is real, and only ends a run that
    cannot fit one more; from the second epoch on the pace is the clock's one second.)"""
    ticks: Iterator[float] = iter(float(t) for t in range(1, 100))
    return Deadline(at, clock=ticks.__next__)


def lrs(result_run_id: str) -> list[float]:
    return [h["lr"] for h in get_run(result_run_id).history]


def test_a_shortened_cosine_run_anneals_from_its_rate_to_zero(shared_datasets: Path) -> None:
    result = train(small_spec(epochs=10), callbacks=[one_second_epochs()])
    assert result.metrics["epochs"] == 5 and result.metrics["planned_epochs"] == 10
    assert registry.get(result.model or "").spec["epochs"] == 5  # what was trained
    got = lrs(result.run_id)
    # cosine over 10 epochs until the cut after epoch 2; then a cosine from that rate to 0
    # over the 3 epochs left (a plain stop at epoch 5 would leave half the base rate)
    planned = [0.003 * 0.5 * (1 + math.cos(math.pi * e / 10)) for e in (1, 2)]
    cut = planned[1]
    expected = [*planned, cut * 0.75, cut * 0.25, 0.0]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_a_deadline_read_after_each_epoch_shortens_the_run_when_it_moves_earlier(
        shared_datasets: Path) -> None:
    # a tuning trial's end follows its search's cut-off: far off until epoch 3, then 5.5 s
    now = [0.0]
    ticks: Iterator[float] = iter(float(t) for t in range(1, 100))

    def clock() -> float:
        now[0] = next(ticks)
        return now[0]

    deadline = Deadline(lambda: 100.0 if now[0] < 3 else 5.5, clock=clock)
    result = train(small_spec(epochs=10), callbacks=[deadline])
    assert result.metrics["epochs"] == 5 and result.metrics["planned_epochs"] == 10


def test_a_one_cycle_run_cut_in_its_warm_up_never_jumps_up(shared_datasets: Path) -> None:
    # one-cycle over 10 epochs warms up for 2.5; the cut comes after epoch 2, still rising
    result = train(small_spec(epochs=10, schedule={"name": "onecycle"}),
                   callbacks=[one_second_epochs()])
    got = lrs(result.run_id)
    assert len(got) == 5 and got[0] < got[1]  # it was warming up
    assert got[1] > got[2] > got[3] > got[4]  # from the cut on it only anneals
    assert got[4] == pytest.approx(0.003 / 25 / 1e4)  # to one-cycle's own floor


class MomentumAtEpochEnd:
    """Records the first parameter group's momentum (Adam's beta1) after each epoch."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        group = trainer.optimizer.param_groups[0]
        self.seen.append(group["betas"][0] if "betas" in group else group["momentum"])


@pytest.mark.parametrize("optimizer", [{"name": "adam", "lr": 0.003},
                                       {"name": "sgd", "lr": 0.05, "momentum": 0.9}])
def test_a_shortened_one_cycle_run_raises_its_momentum_as_its_rate_anneals(
        shared_datasets: Path, optimizer: dict[str, object]) -> None:
    # one-cycle moves momentum against the rate: down to 0.85 in the warm-up, back up to
    # 0.95 as the rate anneals; the re-planned rate anneals from the cut, so must momentum
    momentum = MomentumAtEpochEnd()
    result = train(small_spec(epochs=10, schedule={"name": "onecycle"}, optimizer=optimizer),
                   callbacks=[one_second_epochs(), momentum])
    got, rates = momentum.seen, lrs(result.run_id)
    assert len(got) == 5 and got[0] > got[1]  # cut after epoch 2, in the warm-up
    assert rates[1] > rates[2] and got[1] < got[2] < got[3] < got[4]
    assert got[4] == pytest.approx(0.95)  # one-cycle's max_momentum, as its own end


def test_a_step_schedule_does_not_depend_on_the_length_and_is_kept(
        shared_datasets: Path) -> None:
    result = train(small_spec(epochs=10, schedule={"name": "step", "step_size": 2,
                                                   "gamma": 0.5}),
                   callbacks=[one_second_epochs()])
    assert lrs(result.run_id) == pytest.approx([0.003, 0.0015, 0.0015, 0.00075, 0.00075])


@pytest.mark.parametrize("changes", [
    {},  # cosine, Adam
    {"schedule": {"name": "onecycle"}, "optimizer": {"name": "sgd", "lr": 0.05,
                                                     "momentum": 0.9}},
], ids=["cosine", "onecycle-sgd"])
def test_a_shortened_run_resumes_to_the_same_weights(shared_datasets: Path,
                                                     changes: dict[str, object]) -> None:
    spec = small_spec(epochs=10, **changes)
    reference = train(spec, callbacks=[one_second_epochs()])
    with pytest.raises(TrainingInterrupted):  # interrupted right after the cut (epoch 2)
        train(spec, callbacks=[one_second_epochs(), StopAfter(2)])
    run_id = next(r for r in _run_ids() if r != reference.run_id)
    resumed = resume(run_id)  # no deadline now: the re-planned length and schedule hold
    assert resumed.metrics["epochs"] == 5
    assert lrs(run_id) == pytest.approx(lrs(reference.run_id), rel=1e-9)
    expected, got = registered_weights(reference.model or ""), registered_weights(
        resumed.model or "")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_a_deadline_already_passed_leaves_one_epoch(shared_datasets: Path) -> None:
    result = train(small_spec(epochs=4), callbacks=[Deadline(time.monotonic())])
    assert result.metrics["epochs"] == 1 and result.model == "tiny-mlp:1"


def test_a_deadline_with_time_to_spare_changes_nothing(shared_datasets: Path) -> None:
    result = train(small_spec(epochs=3), callbacks=[Deadline(time.monotonic() + 3600)])
    assert result.metrics["epochs"] == 3 and "planned_epochs" not in result.metrics

