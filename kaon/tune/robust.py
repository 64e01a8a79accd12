"""Accuracy on perturbed validation images: the tie-break between near-equal trials.

Images a model meets after training rarely match its training set's framing and exposure
(another scanner, another camera, another crop). Two configurations whose validation accuracy
is within noise of each other can differ a lot in how well they stand that: on PneumoniaMNIST,
whose test split is framed and exposed differently from train + val, configurations tied on
cross-validation tested 4 points apart, and the one that kept its accuracy on shifted, zoomed
and re-exposed validation images was the one that tested better (docs/decisions/0018).

``perturbed_accuracy`` is the mean, over five kinds of mild change (a 2-pixel shift, a 10% zoom
in or out, ±10% brightness, ×0.8/×1.25 contrast, gamma 0.8/1.25), of the accuracy on the
changed validation images. It needs no labels beyond validation's and never sees the test split.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Perturb = Callable[[torch.Tensor], list[torch.Tensor]]
MIN_SIDE = 8  # smaller "images" (e.g. a CSV's feature row) are not perturbed


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


PERTURBATIONS: dict[str, Perturb] = {
    "shift": lambda x: [_shift(x, dy, dx) for dy, dx in ((2, 0), (-2, 0), (0, 2), (0, -2))],
    "zoom": lambda x: [_zoom(x, 0.9), _zoom(x, 1.1)],
    "brightness": lambda x: [x + 25.5, x - 25.5],
    "contrast": lambda x: [_contrast(x, 0.8), _contrast(x, 1.25)],
    "gamma": lambda x: [255 * (x / 255).clamp_min(0) ** g for g in (0.8, 1.25)],
}


def _to_pixels(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 255).round().to(torch.uint8)


def perturbed_accuracy(logits: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                       labels: torch.Tensor) -> float:
    """Mean over :data:`PERTURBATIONS` of the accuracy on ``images`` (uint8, N×C×H×W) changed
    that way. ``logits`` maps uint8 images to class scores (a trainer's ``logits``). Images
    too small to perturb give the plain accuracy."""
    def accuracy(x: torch.Tensor) -> float:
        return (logits(x).argmax(1).cpu() == labels.cpu()).float().mean().item()

    if min(images.shape[-2:]) < MIN_SIDE:
        return accuracy(images)
    x = images.float()
    kinds = []
    for make in PERTURBATIONS.values():
        changed = make(x)
        kinds.append(sum(accuracy(_to_pixels(v)) for v in changed) / len(changed))
    return sum(kinds) / len(kinds)
