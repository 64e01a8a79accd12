"""Kaon's training loop vs a plain hand-written PyTorch loop, same model and tensors, same run.

    python bench/train_overhead.py [--repeats 2] [--epochs 5]

Both sides train examples/mnist_mlp.yaml's model (Flatten → Dense 128 ReLU → Dense 10, Adam
1e-3 with cosine decay, batch 64) on the same 54,000 in-memory MNIST images for the same
epochs and report test accuracy on the official 10,000. Kaon's time is the whole
``kaon.train.train`` call: per-epoch validation, metrics in SQLite, TensorBoard events, a
checkpoint per epoch, the test evaluation and registration. Runs alternate (baseline, Kaon,
baseline, Kaon…) so drift hits both sides. Kaon uses the fused Adam kernel; the hand loop runs
twice, with the default kernel (what a hand-written loop gets without asking) and with the
fused one, so the table separates Kaon's overhead from the kernel choice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def hand_written(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor,
                 epochs: int, seed: int = 0, fused: bool = False) -> tuple[float, float]:
    """What a PyTorch user writes by hand: shuffle, slice, normalise, step."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    bs = 64
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * -(-len(y) // bs))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), bs):
            idx = perm[i:i + bs]
            xb = (x[idx].float() / 255 - 0.1307) / 0.3081
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model((xt.float() / 255 - 0.1307) / 0.3081).argmax(1) == yt).float().mean()
    return time.perf_counter() - t0, float(acc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    os.environ["KAON_HOME"] = tempfile.mkdtemp(prefix="kaon-bench-")
    os.environ.setdefault("KAON_DATA_PATH", str(REPO.parent / "shared" / "datasets"))

    from kaon.data import load_dataset
    from kaon.nn.spec import load_spec
    from kaon.train import train
    from kaon.train.api import _Setup

    spec = load_spec(REPO / "examples" / "mnist_mlp.yaml", [f"epochs={args.epochs}"])
    mnist = load_dataset("mnist")
    setup = _Setup(spec, mnist, torch.device("cpu"))  # the exact split Kaon trains on
    x, y = setup.data.x_train, setup.data.y_train
    assert setup.test is not None
    xt, yt = setup.test
    train(spec)  # warm-up: database creation, imports, allocator

    rows = []
    for r in range(args.repeats):
        base_s, base_acc = hand_written(x, y, xt, yt, args.epochs)
        fused_s, _ = hand_written(x, y, xt, yt, args.epochs, fused=True)
        t0 = time.perf_counter()
        result = train(spec)
        kaon_s = time.perf_counter() - t0
        rows.append((r + 1, base_s, base_acc, kaon_s, result.metrics["test_accuracy"],
                     fused_s))

    print(f"\nMNIST MLP, {args.epochs} epochs, {len(y):,} train images, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| repeat | hand-written s | hand acc | hand + fused Adam s | kaon s | kaon acc "
          "| kaon / hand | kaon / hand+fused |")
    print("|---|---|---|---|---|---|---|---|")
    for r, bs_, ba, ks, ka, fs in rows:
        print(f"| {r} | {bs_:.2f} | {ba:.4f} | {fs:.2f} | {ks:.2f} | {ka:.4f} | "
              f"{ks / bs_:.3f} | {ks / fs:.3f} |")
    for label, pick in (("best", min), ("median", statistics.median)):
        base, fused, kaon = (pick(r[i] for r in rows) for i in (1, 5, 3))
        print(f"| {label} | {base:.2f} | | {fused:.2f} | {kaon:.2f} | | {kaon / base:.3f} | "
              f"{kaon / fused:.3f} |")


if __name__ == "__main__":
    main()
