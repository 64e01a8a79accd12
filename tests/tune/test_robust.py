"""Accuracy on perturbed validation images (kaon.tune.robust)."""

from __future__ import annotations

import pytest
import torch

from kaon.tune.robust import PERTURBATIONS, _shift, _zoom, perturbed_accuracy


def squares(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """16x16 grey images; class 1 has a bright 4x4 square in the middle (rows/cols 6-9)."""
    images = torch.full((n, 1, 16, 16), 40, dtype=torch.uint8)
    labels = torch.arange(n) % 2
    images[labels == 1, :, 6:10, 6:10] = 220
    return images, labels


def by_brightest(x: torch.Tensor) -> torch.Tensor:
    """Class 1 when any pixel is bright: indifferent to where the square is."""
    bright = (x.float().amax(dim=(1, 2, 3)) > 128).float()
    return torch.stack([1 - bright, bright], dim=1)


def by_one_pixel(x: torch.Tensor) -> torch.Tensor:
    """Class 1 when pixel (6, 6) is bright: right on the training framing only."""
    bright = (x[:, 0, 6, 6].float() > 128).float()
    return torch.stack([1 - bright, bright], dim=1)


def test_a_model_tied_to_the_framing_loses_accuracy_that_plain_validation_does_not_show(
) -> None:
    images, labels = squares()
    for model in (by_brightest, by_one_pixel):
        assert (model(images).argmax(1) == labels).all()  # both perfect on the images as they are
    assert perturbed_accuracy(by_brightest, images, labels) == 1.0
    # two of the four shifts move the square off pixel (6, 6): the shift kind scores 0.75
    assert perturbed_accuracy(by_one_pixel, images, labels) == pytest.approx((0.75 + 4) / 5)


def test_shift_moves_the_content_and_repeats_the_edge() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down = _shift(x, 2, 0)
    assert torch.equal(down[0, 0, 2:], x[0, 0, :2]) and torch.equal(down[0, 0, 0], x[0, 0, 0])
    right = _shift(x, 0, -1)
    assert torch.equal(right[0, 0, :, :3], x[0, 0, :, 1:])


def test_every_perturbation_keeps_the_shape_and_changes_the_pixels() -> None:
    images, _ = squares(4)
    x = images.float()
    for name, make in PERTURBATIONS.items():
        for changed in make(x):
            assert changed.shape == x.shape, name
            assert not torch.equal(changed, x), name
    assert _zoom(x, 1.1).shape == _zoom(x, 0.9).shape == x.shape


def test_images_too_small_to_perturb_give_the_plain_accuracy() -> None:
    images = torch.zeros(4, 1, 1, 12, dtype=torch.uint8)  # e.g. a CSV's row of features
    labels = torch.tensor([0, 1, 0, 1])
    assert perturbed_accuracy(lambda x: torch.tensor([[1.0, 0.0]] * len(x)), images,
                              labels) == 0.5
