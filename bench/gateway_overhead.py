"""What the gateway adds per inference request: `kaon up` /d/… vs `kaon serve` directly.

    python bench/gateway_overhead.py [--concurrency 1,16] [--window 4] [--rounds 5]

The same registered model (a small MLP, random weights) with the same batching settings is
served twice: by `kaon serve` on its own port (the serving runtime, called directly) and as
a deployment of `kaon up`, reached through the gateway with an API key (auth, rate limit,
quota, metering to the journal, forwarding to the replica). Two topologies: one replica
(`kaon serve` runs it in-process, so the gateway's forwarding hop counts against it) and two
replicas (`kaon serve` forwards through its own front, as the gateway does, so the
difference is the gateway's own checks and metering).

Both servers run at once and the load alternates between them, window by window (A/B
interleaving, `--rounds` windows each after a warm-up): this VM's speed drifts by 10–30%
over minutes, which sequential runs would count as overhead. Each cell is the median of its
windows; the overhead is the median over rounds of the paired differences. Load: wrk (one
thread; the Python load generator when wrk is missing), the same body for both sides. Both
run torch with one thread, as deployments do.
Plans: the free plan without a hard cap and unthrottled (bench/crash_metering.py), so the
numbers show the metering path, not 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from crash_metering import open_plans, register_digits  # noqa: E402
from serve_compare import start, stop, wrk_script, wrk_window  # noqa: E402


def rounds(targets: dict[str, tuple[str, Path]], concurrency: int, window: float,
           n: int) -> dict[str, list[dict[str, float]]]:
    """``n`` windows on each target, alternating, after a warm-up window on each."""
    for url, script in targets.values():
        wrk_window(url, script, concurrency, 2)
    out: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(n):
        for name, (url, script) in targets.items():
            out[name].append(wrk_window(url, script, concurrency, window))
    return out


def python_rounds(targets: dict[str, tuple[str, dict[str, str] | None]], body: dict[str, Any],
                  concurrency: int, window: float, n: int) -> dict[str, list[dict[str, float]]]:
    from kaon.serve.loadgen import measure as py_measure

    out: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for url, headers in targets.values():  # warm-up
        asyncio.run(py_measure(url, body, [concurrency], window_s=2, headers=headers))
    for _ in range(n):
        for name, (url, headers) in targets.items():
            (level,) = asyncio.run(py_measure(url, body, [concurrency], window_s=window,
                                              headers=headers))
            out[name].append({"rps": level.requests_per_s, "p50": level.p50_ms,
                              "p99": level.p99_ms, "errors": level.errors})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--wait-ms", type=float, default=2.0)
    parser.add_argument("--replicas", default="1,2",
                        help="deployment sizes to compare; `kaon serve` runs one replica "
                             "in-process, more behind its front")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kaon-gateway-bench-"))
    os.environ["KAON_HOME"] = str(home)
    from kaon.config import reset_settings
    from kaon.net import free_port
    from kaon.platform.launch import PlatformProcess

    reset_settings()
    register_digits(hidden=64)
    body = {"inputs": [np.zeros((28, 28), dtype=int).tolist()]}
    levels = [int(c) for c in args.concurrency.split(",")]
    sizes = [int(r) for r in args.replicas.split(",")]
    results: dict[tuple[int, int], dict[str, list[dict[str, float]]]] = {}
    env = {"KAON_PLANS_FILE": str(open_plans(home / "plans.toml"))}
    with PlatformProcess(home, env=env) as platform:
        for replicas in sizes:
            name = f"digits{replicas}"
            platform.deploy(name, "digits", replicas=replicas, max_batch_size=args.batch,
                            max_wait_ms=args.wait_ms)
            proc, url, _ = start("kaon", "digits:1", free_port(), args.batch, args.wait_ms,
                                 {**os.environ}, threads=1,  # as a deployment's replica runs
                                 replicas=replicas)
            gateway = f"{platform.url}/d/{name}/v1/models/digits/predict"
            try:
                for c in levels:
                    if shutil.which("wrk"):
                        targets = {
                            "direct": (url, wrk_script(home / "direct.json", body)),
                            "gateway": (gateway, wrk_script(home / "gateway.json", body,
                                                            platform.headers))}
                        results[(replicas, c)] = rounds(targets, c, args.window, args.rounds)
                    else:
                        results[(replicas, c)] = python_rounds(
                            {"direct": (url, None), "gateway": (gateway, platform.headers)},
                            body, c, args.window, args.rounds)
            finally:
                stop(proc)
    report(results, args)


def report(results: dict[tuple[int, int], dict[str, list[dict[str, float]]]],
           args: argparse.Namespace) -> None:
    table = Table(title=f"Gateway overhead, 1 image/request, batch ≤ {args.batch}, wait "
                        f"{args.wait_ms} ms, {args.rounds} interleaved {args.window:g} s windows")
    for col in ("replicas", "concurrency", "path", "req/s", "p50 ms", "p99 ms", "errors",
                "req/s spread"):
        table.add_column(col, justify="right")
    lines = []
    for (replicas, c), sides in results.items():
        for side, label in (("direct", "direct (kaon serve)"), ("gateway", "gateway (kaon up)")):
            ws = sides[side]
            rps = [w["rps"] for w in ws]
            table.add_row(str(replicas), str(c), label, f"{median(rps):.0f}",
                          f"{median(w['p50'] for w in ws):.2f}",
                          f"{median(w['p99'] for w in ws):.2f}",
                          f"{sum(w['errors'] for w in ws):.0f}",
                          f"{max(rps) / min(rps) - 1:.0%}" if min(rps) > 0 else "-")
        pairs = list(zip(sides["direct"], sides["gateway"], strict=True))
        hop = "in-process" if replicas == 1 else "behind kaon serve's front"
        lines.append(f"{replicas} replica(s) ({hop} when direct), concurrency {c}: the gateway "
                     f"adds {median(g['p50'] - d['p50'] for d, g in pairs):.2f} ms at p50, "
                     f"{median(g['p99'] - d['p99'] for d, g in pairs):.2f} ms at p99 "
                     f"(median of {len(pairs)} paired windows; p50 per window, direct: "
                     f"{_p50s(sides['direct'])}; gateway: {_p50s(sides['gateway'])})")
    console = Console()
    console.print(table)
    for line in lines:
        console.print(line)


def _p50s(windows: list[dict[str, float]]) -> str:
    return ", ".join(f"{w['p50']:.1f}" for w in windows)


if __name__ == "__main__":
    main()
