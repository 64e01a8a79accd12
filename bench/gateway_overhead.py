"""What the gateway adds per inference request: `kaon up` /d/… vs `kaon serve` directly.

    python bench/gateway_overhead.py [--concurrency 16] [--window 4]

The same registered model (a small MLP, random weights) with the same batching settings is
served twice: by `kaon serve` on its own port (the serving runtime, called directly) and as
a deployment of `kaon up`, reached through the gateway with an API key (auth, rate limit,
quota, metering with group commit, forwarding to the replica). Two topologies: one replica
(`kaon serve` runs it in-process, so the gateway's forwarding hop counts against it) and two
replicas (`kaon serve` forwards through its own front, as the gateway does, so the
difference is the gateway's own checks and metering). Load: wrk when installed,
perf_analyzer-style stable windows (see serve_compare.py), the same body for both.
Both run torch with one thread, as deployments do. The overhead is the difference of the two
p50 latencies at the same concurrency.
Plans: the free plan without a hard cap and unthrottled (bench/crash_metering.py), so the
numbers show the metering path, not 429s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from crash_metering import open_plans, register_digits  # noqa: E402
from serve_compare import measure, start, stop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--window", type=float, default=4.0)
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
    rows = []
    for replicas in sizes:
        proc, url, _ = start("kaon", "digits:1", free_port(), args.batch, args.wait_ms,
                             {**os.environ}, threads=1,  # as a deployment's replica runs
                             replicas=replicas)
        try:
            for c in levels:
                rows.append(("direct (kaon serve)", replicas, c,
                             measure(url, body, c, args.window, home)))
        finally:
            stop(proc)
    env = {"KAON_PLANS_FILE": str(open_plans(home / "plans.toml"))}
    with PlatformProcess(home, env=env) as platform:
        for replicas in sizes:
            name = f"digits{replicas}"
            platform.deploy(name, "digits", replicas=replicas, max_batch_size=args.batch,
                            max_wait_ms=args.wait_ms)
            gateway = f"{platform.url}/d/{name}/v1/models/digits/predict"
            for c in levels:
                rows.append(("gateway (kaon up)", replicas, c,
                             measure(gateway, body, c, args.window, home,
                                     headers=platform.headers)))
    table = Table(title=f"Gateway overhead, 1 image/request, batch ≤ {args.batch}, "
                        f"wait {args.wait_ms} ms")
    for col in ("path", "replicas", "concurrency", "req/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(col, justify="right")
    for name, replicas, c, r in rows:
        table.add_row(name, str(replicas), str(c), f"{r['rps']:.0f}", f"{r['p50']:.2f}",
                      f"{r['p99']:.2f}", f"{r['errors']:.0f}")
    console = Console()
    console.print(table)
    for replicas in sizes:
        hop = "in-process" if replicas == 1 else "behind kaon serve's front"
        for c in levels:
            direct, via = (next(r for n, rr, cc, r in rows
                                if rr == replicas and cc == c and n.startswith(kind))
                           for kind in ("direct", "gateway"))
            console.print(f"{replicas} replica(s) ({hop} when direct), concurrency {c}: the "
                          f"gateway adds {via['p50'] - direct['p50']:.2f} ms at p50, "
                          f"{via['p99'] - direct['p99']:.2f} ms at p99")


if __name__ == "__main__":
    main()
