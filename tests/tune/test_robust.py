"""Scoring trials on perturbed validation images (kaon.tune.robust, decision 0020)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from kaon.tune.robust import KINDS, perturb, perturbable
from kaon.tune.worker import objective_on, robust_objective


def images(n: int, side: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, side, side), generator=g, dtype=torch.uint8)


def variants(x: torch.Tensor) -> list[torch.Tensor]:
    """Every change of KINDS applied to ``x``, as pixels."""
    f = x.float()
    return [c(f).clamp(0, 255).round().to(torch.uint8) for cs in KINDS.values() for c in cs]


def test_each_image_gets_exactly_one_of_the_changes_all_kinds_and_no_test_data() -> None:
    x = images(400)
    out = perturb(x, seed=3)
    assert out.shape == x.shape and out.dtype == torch.uint8
    changed = variants(x)
    hits = torch.stack([(v == out).flatten(1).all(1) for v in changed], dim=1)  # N x variants
    assert bool(hits.any(1).all())  # every image is one of its own variants
    sizes = [len(cs) for cs in KINDS.values()]
    per_kind = [int(h.any(1).sum()) for h in hits.split(sizes, dim=1)]
    assert all(count > 40 for count in per_kind), per_kind  # five kinds, about 80 each
    assert not bool((out == x).flatten(1).all(1).all())  # something did change


def test_the_changes_are_fixed_by_the_seed_so_every_trial_meets_the_same_images() -> None:
    x = images(64)
    assert torch.equal(perturb(x, seed=1), perturb(x, seed=1))
    assert not torch.equal(perturb(x, seed=1), perturb(x, seed=2))


def test_a_shift_moves_the_content_two_pixels_and_repeats_the_edge() -> None:
    x = torch.zeros(1, 1, 10, 10)
    x[0, 0, 4, 4] = 200
    down = KINDS["shift"][0](x)
    assert down[0, 0, 6, 4] == 200 and down[0, 0, 4, 4] == 0


def test_what_is_not_a_pixel_image_is_left_alone() -> None:
    small = images(8, side=6)  # a 6x6 toy: a 2-pixel shift is not mild there
    assert torch.equal(perturb(small), small)
    features = torch.rand(8, 1, 16, 16)  # floats: not pixels 0-255
    assert not perturbable(features) and torch.equal(perturb(features), features)
    assert not perturbable(torch.zeros(8, 20, dtype=torch.uint8))


class CentreReader:
    """A 'trained model' that reads one pixel: class 1 when the centre pixel is bright."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.data = SimpleNamespace(x_val=x, y_val=y)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x[:, 0, 8, 8].float() > 127).float()
        return torch.stack([1 - bright, bright], dim=1)


def test_the_robust_score_is_lower_for_a_model_that_fails_on_shifted_images() -> None:
    x = torch.zeros(300, 1, 16, 16, dtype=torch.uint8)
    y = torch.arange(300) % 2
    x[y == 1, 0, 8, 8] = 255  # one bright pixel: a shift moves it away from where it is read
    model = CentreReader(x, y)
    assert objective_on(model, x, y, "accuracy") == 1.0
    robust = robust_objective(model, "accuracy", seed=0)
    # the shifted class-1 images (a fifth of them: a tenth of all) are now misread
    assert 0.8 < robust < 0.97
    assert 0.8 < robust_objective(model, "auc", seed=0) < 0.99
