"""On-the-fly preprocessing shared by training, evaluation and serving."""

from __future__ import annotations

import torch


class Normalizer:
    """uint8 (N, C, H, W) → float32 ``(x/255 - mean) / std``, fused into one multiply-add."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device | str = "cpu",
                 channels_last: bool = False):
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * s)
        self.shift = -m / s

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addcmul(self.shift, x.float(), self.scale)
        return out.contiguous(memory_format=self.memory_format)


def prefers_channels_last(model: torch.nn.Module) -> bool:
    """Convolutional models run faster in NHWC layout (oneDNN on CPU, tensor cores on GPU)."""
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def channel_stats(images: torch.Tensor, max_images: int = 20000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units, from (a prefix of) a uint8 image tensor."""
    x = images[:max_images].float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift a whole batch by one random (dy, dx) with zero fill — cheap light augmentation."""
    if max_shift <= 0:
        return x
    dy, dx = (torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)).tolist()
    if dy == 0 and dx == 0:
        return x
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip a random half of the batch left-right."""
    mask = torch.rand(x.shape[0], generator=generator) < 0.5
    if mask.any():
        x = x.clone()
        x[mask] = x[mask].flip(-1)
    return x
