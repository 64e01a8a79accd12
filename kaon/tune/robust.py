"""Scoring a trial on perturbed validation images (``kaon tune --robust``).

The images a model meets after training rarely match its training set's framing and exposure:
another scanner, another camera, another crop. Configurations that tie on validation can
differ a lot in how well they stand that. On PneumoniaMNIST, whose test split is framed and
exposed differently from train + validation, configurations within 0.003 of each other on
cross-validation tested 4 points apart, and the one that kept its accuracy on shifted, zoomed
and re-exposed validation images was the one that tested better (docs/decisions/0020).

:func:`perturb` gives each validation image one mild change, drawn per image with a fixed
seed (the same changes for every trial): a 2-pixel shift, a 10% zoom in or out, ±10%
brightness, ×0.8 / ×1.25 contrast, or gamma 0.8 / 1.25 (the five kinds equally often). One
change per image keeps the cost at one more forward pass over the validation images. The
trial's score is its objective on those images. No test image is involved.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

MIN_SIDE = 8  # smaller "images" (a CSV's row of features, a 6x6 toy) are not perturbed


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content by (dy, dx) pixels, repeating the edge into the gap."""
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def _zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Zoom about the centre, keeping the size: crop after zooming in, edge-pad after out."""
    h, w = x.shape[-2:]
    y = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear",
                      align_corners=False)
    yh, yw = y.shape[-2:]
    if scale >= 1:
        top, left = (yh - h) // 2, (yw - w) // 2
        return y[..., top:top + h, left:left + w]
    top, left = (h - yh) // 2, (w - yw) // 2
    return F.pad(y, (left, w - yw - left, top, h - yh - top), mode="replicate")


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * factor + mean


def _gamma(x: torch.Tensor, g: float) -> torch.Tensor:
    return 255 * (x / 255).clamp_min(0) ** g


Change = Callable[[torch.Tensor], torch.Tensor]
KINDS: dict[str, tuple[Change, ...]] = {  # on float pixels 0-255, N x C x H x W
    "shift": (lambda x: _shift(x, 2, 0), lambda x: _shift(x, -2, 0),
              lambda x: _shift(x, 0, 2), lambda x: _shift(x, 0, -2)),
    "zoom": (lambda x: _zoom(x, 0.9), lambda x: _zoom(x, 1.1)),
    "brightness": (lambda x: x + 25.5, lambda x: x - 25.5),
    "contrast": (lambda x: _contrast(x, 0.8), lambda x: _contrast(x, 1.25)),
    "gamma": (lambda x: _gamma(x, 0.8), lambda x: _gamma(x, 1.25)),
}


def perturbable(images: torch.Tensor) -> bool:
    """Pixel images (uint8) large enough for a 2-pixel shift to be a mild change."""
    return (images.dtype == torch.uint8 and images.dim() == 4
            and min(images.shape[-2:]) >= MIN_SIDE)


def perturb(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``images`` (uint8, N x C x H x W), each with one change of :data:`KINDS`: the kind
    uniform, then the variant uniform within it, drawn with ``seed``. Images too small to
    perturb come back unchanged."""
    if not perturbable(images):
        return images
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    kind = torch.randint(len(KINDS), (n,), generator=g)
    variant = torch.randint(2**16, (n,), generator=g)
    out = images.clone()
    x = images.float()
    for k, changes in enumerate(KINDS.values()):
        for v, change in enumerate(changes):
            chosen = ((kind == k) & (variant % len(changes) == v)).to(images.device)
            if chosen.any():
                changed = change(x[chosen]).clamp(0, 255).round()
                out[chosen] = changed.to(images.dtype)
    return out
