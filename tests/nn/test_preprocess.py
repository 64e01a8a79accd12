"""Preprocessing shared by training and serving: normalisation, channel stats, augmentation."""

from __future__ import annotations

import pytest
import torch

from kaon.nn.preprocess import (
    Normalizer,
    channel_stats,
    prefers_channels_last,
    random_hflip,
    random_shift,
)


def random_images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def test_normalizer_computes_x_over_255_minus_mean_over_std_per_channel() -> None:
    images = random_images(4, 3, 5, 6)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.25, 0.5]
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std).view(1, 3, 1, 1)
    out = Normalizer(mean, std)(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_normalizer_can_emit_channels_last_layout() -> None:
    out = Normalizer([0.5] * 3, [0.5] * 3, channels_last=True)(random_images(2, 3, 4, 4))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_convolutional_models_prefer_channels_last() -> None:
    assert prefers_channels_last(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)))
    assert not prefers_channels_last(torch.nn.Sequential(torch.nn.Flatten(),
                                                         torch.nn.Linear(4, 2)))


def test_channel_stats_are_in_unit_range_with_a_floor_on_std() -> None:
    images = torch.zeros(2, 2, 1, 2, dtype=torch.uint8)
    images[:, 0, 0, 1] = 255  # channel 0 holds 0, 1, 0, 1 (in [0,1] units); channel 1 is flat
    mean, std = channel_stats(images)
    assert mean == [0.5, 0.0]
    assert std[0] == pytest.approx((1 / 3) ** 0.5, abs=1e-6)  # sample std of 0,1,0,1
    assert std[1] == 1e-3


def test_channel_stats_use_only_the_first_max_images() -> None:
    images = torch.cat([torch.zeros(3, 1, 2, 2, dtype=torch.uint8),
                        torch.full((3, 1, 2, 2), 255, dtype=torch.uint8)])
    assert channel_stats(images, max_images=3)[0] == [0.0]


def test_random_shift_of_zero_returns_the_batch_unchanged() -> None:
    images = random_images(2, 1, 6, 6)
    assert random_shift(images, 0, torch.Generator()) is images


def test_random_shift_moves_the_whole_batch_by_one_offset_with_zero_fill() -> None:
    images = torch.zeros(3, 1, 9, 9, dtype=torch.uint8)
    images[:, 0, 4, 4] = torch.tensor([10, 20, 30], dtype=torch.uint8)
    offsets = set()
    for seed in range(20):
        out = random_shift(images, 2, torch.Generator().manual_seed(seed))
        nonzero = out[:, 0].nonzero().tolist()  # [image, y, x], one pixel per image
        assert [n for n, _, _ in nonzero] == [0, 1, 2]
        assert len({(y, x) for _, y, x in nonzero}) == 1
        (_, y, x) = nonzero[0]
        assert abs(y - 4) <= 2 and abs(x - 4) <= 2
        assert out.sum() == images.sum()
        offsets.add((y - 4, x - 4))
    assert len(offsets) > 1


def test_random_shift_is_reproducible_for_a_seeded_generator() -> None:
    images = random_images(4, 1, 8, 8)
    first = random_shift(images, 3, torch.Generator().manual_seed(7))
    again = random_shift(images, 3, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)


def test_random_hflip_mirrors_some_images_and_leaves_the_rest() -> None:
    images = random_images(64, 1, 4, 5)
    out = random_hflip(images, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_random_hflip_does_not_modify_its_input() -> None:
    images = random_images(16, 1, 3, 3)
    before = images.clone()
    random_hflip(images, torch.Generator().manual_seed(1))
    assert torch.equal(images, before)
