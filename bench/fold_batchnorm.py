"""BatchNorm folded at load (``kaon.nn.fold``) against the model as trained, in this process.

    python bench/fold_batchnorm.py [--batches 1,32] [--rounds 7] [--threads 2]

For the MNIST CNN of examples/mnist_cnn.yaml and the ResNet-18 shape of
bench/serve_compare.py (random weights, BatchNorm statistics set as after training), both
in eval mode and channels-last, as ``load_model`` serves them: images/s at each batch size,
the two models' calls interleaved for ``--rounds`` rounds of about a second each (medians),
and the largest difference between their class probabilities.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from serve_compare import MODELS  # noqa: E402

from kaon.nn import build_model, parse_spec  # noqa: E402
from kaon.nn.fold import count_batchnorms, fold_batchnorm  # noqa: E402

console = Console(width=140)


def with_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics and affine terms away from their initial values, as trained."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def images_per_second(model: torch.nn.Module, x: torch.Tensor, seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < seconds:
            model(x)
            calls += 1
    return calls * len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(title=f"BatchNorm folded vs as trained, {args.threads} thread(s), medians of "
                        f"{args.rounds} interleaved rounds")
    for col in ("model", "BatchNorms", "batch", "as trained img/s", "folded img/s",
                "folded ÷ as trained", "max |Δ probability|"):
        table.add_column(col, justify="right")
    raws = {"mnist-cnn": yaml.safe_load((REPO / "examples/mnist_cnn.yaml").read_text()),
            "resnet18": MODELS["resnet18"]}
    for name, raw in raws.items():
        torch.manual_seed(0)
        trained = with_statistics(build_model(parse_spec({**raw, "name": name}),
                                              (1, 28, 28), 10))
        folded = fold_batchnorm(trained, torch.randn(2, 1, 28, 28))
        trained = trained.to(memory_format=torch.channels_last)
        folded = folded.to(memory_format=torch.channels_last)
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
            images_per_second(trained, x, 0.5)  # warm-up
            images_per_second(folded, x, 0.5)
            a, b = [], []
            for _ in range(args.rounds):
                a.append(images_per_second(trained, x, 1.0))
                b.append(images_per_second(folded, x, 1.0))
            with torch.inference_mode():
                delta = (torch.softmax(trained(x), 1) - torch.softmax(folded(x), 1)).abs().max()
            base, new = statistics.median(a), statistics.median(b)
            table.add_row(name, f"{count_batchnorms(trained)} → {count_batchnorms(folded)}",
                          str(batch), f"{base:,.0f}", f"{new:,.0f}", f"{new / base:.3f}",
                          f"{float(delta):.1e}")
            console.print(f"{name} batch {batch}: {base:,.0f} → {new:,.0f} images/s")
    console.print(table)


if __name__ == "__main__":
    main()
