"""Losses with and without class-balanced weights, and schedules (kaon/train/optim.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kaon.nn.spec import Schedule
from kaon.train.optim import balanced_weights, make_loss, make_scheduler


def test_balanced_weights_are_n_over_classes_times_count_and_zero_for_an_absent_class() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    weights = balanced_weights(labels, num_classes=3)
    assert weights.tolist() == pytest.approx([4 / (3 * 3), 4 / (3 * 1), 0.0])


@pytest.mark.parametrize("name,units", [("cross_entropy", 3), ("binary_cross_entropy", 3),
                                        ("binary_cross_entropy", 1), ("mse", 3)])
def test_without_weights_every_loss_is_the_plain_batch_mean(name: str, units: int) -> None:
    torch.manual_seed(0)
    classes = 2 if units == 1 else 3
    logits, y = torch.randn(8, units), torch.randint(0, classes, (8,))
    expected = {
        "cross_entropy": lambda: F.cross_entropy(logits, y),
        "binary_cross_entropy": lambda: (
            F.binary_cross_entropy_with_logits(logits.view(-1), y.float()) if units == 1
            else F.binary_cross_entropy_with_logits(logits, F.one_hot(y, 3).float())),
        "mse": lambda: F.mse_loss(torch.softmax(logits, 1), F.one_hot(y, 3).float()),
    }[name]()
    assert make_loss(name, units, classes)(logits, y).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("name,units", [("cross_entropy", 2), ("binary_cross_entropy", 1),
                                        ("mse", 2)])
def test_balanced_weights_make_each_class_count_as_much_as_the_other(name: str,
                                                                     units: int) -> None:
    # three examples of class 0, one of class 1: weighted, the lone class-1 example counts
    # as much as the three others together
    torch.manual_seed(1)
    logits, y = torch.randn(4, units), torch.tensor([0, 0, 0, 1])
    per_example = make_loss(name, units, 2)
    weighted = make_loss(name, units, 2, balanced_weights(y, 2))
    majority = per_example(logits[:3], y[:3])
    minority = per_example(logits[3:], y[3:])
    assert weighted(logits, y).item() == pytest.approx(((majority + minority) / 2).item())
    assert per_example(logits, y).item() == pytest.approx(((3 * majority + minority) / 4).item())


@pytest.mark.parametrize("epochs,steps", [(1, 1), (1, 2), (1, 3), (1, 4), (2, 2), (1, 5), (3, 7)])
def test_one_cycle_runs_however_few_the_steps(epochs: int, steps: int) -> None:
    # warm-up 0.25 of 4 steps is one step, where OneCycleLR divided by zero
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler, per_step = make_scheduler(Schedule(name="onecycle"), opt, epochs, steps)
    for _ in range(epochs * steps):
        opt.step()
        if scheduler is not None and per_step:
            scheduler.step()
    assert 0 < opt.param_groups[0]["lr"] <= 0.1
