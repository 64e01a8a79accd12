"""Time to 99% MNIST test accuracy: examples/mnist_cnn.yaml through Kaon vs a plain small CNN.

    python bench/mnist_cnn.py [--max-epochs 6]

The baseline is the plain small CNN most tutorials write (conv32 → pool → conv64 → pool →
dense128 → dense10, Adam 1e-3, batch 64) in a hand-written loop over the same in-memory
tensors. Both sides are checked on the official 10,000 test images after every epoch; the
clock stops at the first epoch at or above 99.0%. Kaon's clock covers the whole
``kaon.train.train`` call (validation, checkpoints, metrics, registration) up to that epoch.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.99


def plain_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def test_accuracy(model: nn.Module, xt: torch.Tensor, yt: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model((xt[i:i + 1000].float() / 255 - 0.1307) / 0.3081).argmax(1)
                           == yt[i:i + 1000]).sum()) for i in range(0, len(yt), 1000))
    model.train()
    return correct / len(yt)


def baseline(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor,
             max_epochs: int) -> list[tuple[float, float]]:
    torch.manual_seed(0)
    model = plain_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    t0, curve = time.perf_counter(), []
    for _ in range(max_epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model((x[idx].float() / 255 - 0.1307) / 0.3081), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        curve.append((time.perf_counter() - t0, test_accuracy(model, xt, yt)))
        if curve[-1][1] >= TARGET:
            break
    return curve


class TestCurve:
    """Kaon callback: test accuracy after each epoch, with the wall time since start."""

    def __init__(self, xt: torch.Tensor, yt: torch.Tensor) -> None:
        self.xt, self.yt, self.t0 = xt, yt, time.perf_counter()
        self.curve: list[tuple[float, float]] = []

    def on_epoch_end(self, trainer, epoch: int, logs: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
        _, acc = trainer.evaluate(self.xt, self.yt)
        self.curve.append((time.perf_counter() - self.t0, acc))


def first_hit(curve: list[tuple[float, float]]) -> str:
    for epoch, (seconds, acc) in enumerate(curve, 1):
        if acc >= TARGET:
            return f"{seconds:.1f} s (epoch {epoch})"
    return "not reached"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=6)
    args = parser.parse_args()
    os.environ["KAON_HOME"] = tempfile.mkdtemp(prefix="kaon-bench-")
    os.environ.setdefault("KAON_DATA_PATH", str(REPO.parent / "shared" / "datasets"))

    from kaon.data import load_dataset
    from kaon.nn.spec import load_spec
    from kaon.train import train
    from kaon.train.api import _Setup

    spec = load_spec(REPO / "examples" / "mnist_cnn.yaml")
    setup = _Setup(spec, load_dataset("mnist"), torch.device("cpu"))
    assert setup.test is not None
    xt, yt = setup.test
    x, y = setup.data.x_train, setup.data.y_train
    train(spec.model_copy(update={"epochs": 1}))  # warm-up: imports, database, allocator

    base = baseline(x, y, xt, yt, args.max_epochs)
    probe = TestCurve(xt, yt)
    t0 = time.perf_counter()
    result = train(spec, callbacks=[probe])
    kaon_total = time.perf_counter() - t0

    print(f"\nMNIST, time to {TARGET:.0%} test accuracy, {len(y):,} train images, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| side | params | test acc per epoch | time to 99% | final acc | total s |")
    print("|---|---|---|---|---|---|")
    base_params = sum(p.numel() for p in plain_cnn().parameters())
    print(f"| plain CNN, hand loop | {base_params:,} | "
          f"{', '.join(f'{a:.4f}' for _, a in base)} | {first_hit(base)} | {base[-1][1]:.4f} "
          f"| {base[-1][0]:.1f} |")
    print(f"| kaon mnist_cnn.yaml | {result.metrics['parameters']:,} | "
          f"{', '.join(f'{a:.4f}' for _, a in probe.curve)} | {first_hit(probe.curve)} | "
          f"{result.metrics['test_accuracy']:.4f} | {kaon_total:.1f} |")


if __name__ == "__main__":
    main()
