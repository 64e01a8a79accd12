"""What the gateway adds per stream frame: `kaon up` /d/…/stream vs `kaon serve` directly.

    python bench/gateway_streams.py [--streams 1,4,8] [--seconds 6] [--rounds 4] [--fps 25]

The frame model of bench/serve_streams.py (240×360 grey frames, three strided convolutions;
random weights) is served twice with the same batching (≤ 16, 2 ms) and one torch thread, as
a deployment's replica runs: by `kaon serve` on its own port, and as a deployment of `kaon up`
whose stream is reached through the gateway with an API key. Through the gateway each frame
takes a rate-limit token, is metered (`stream_frames`, journaled), renumbered and relayed over
a second WebSocket hop to the replica; every 5 s the key, plan and quota are checked again
(decision 0025). The plan is the free plan with streams, uncapped and effectively
unthrottled (so the numbers show the per-frame path, not 429s or drops by the rate limit).

For each stream count, both sides run in turn, window by window (A/B interleaving, `--rounds`
windows each after a warm-up), each stream sending raw tensor frames at `--fps` on the frame
clock with `policy=drop_oldest`. Latency is on the client's clock: send to result. The added
cost is the median over rounds of the paired differences (gateway − direct) of each window's
p50 and p99. The load generator shares the 2 cores with both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from crash_metering import open_plans  # noqa: E402
from serve_compare import start, stop  # noqa: E402
from serve_streams import frame_bytes, level, register_frame_model  # noqa: E402

QUERY = "/v1/models/frames/stream?policy=drop_oldest&max_pending=8"


def stream_plans(path: Path) -> Path:
    """open_plans, and the free plan also has streams, up to 64 open at once."""
    open_plans(path)
    text = path.read_text()
    free = re.search(r"\[plans\.free\].*?(?=\n\[plans\.|\Z)", text, flags=re.S)
    assert free is not None
    block = re.sub(r"features = \[\]", 'features = ["streams"]', free[0])
    block = re.sub(r"max_streams = \d+", "max_streams = 64", block)
    path.write_text(text.replace(free[0], block))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kaon-gateway-streams-"))
    os.environ["KAON_HOME"] = str(home)
    from kaon.config import reset_settings
    from kaon.net import free_port
    from kaon.platform.launch import PlatformProcess

    reset_settings()
    register_frame_model()
    frames = [frame_bytes(i) for i in range(16)]
    counts = [int(c) for c in args.streams.split(",")]
    env = {"KAON_PLANS_FILE": str(stream_plans(home / "plans.toml"))}
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    with PlatformProcess(home, env=env) as platform:
        platform.deploy("frames", "frames", replicas=1, max_batch_size=args.batch,
                        max_wait_ms=args.wait_ms)
        proc, _, base = start("kaon", "frames:1", free_port(), args.batch, args.wait_ms,
                              {**os.environ}, threads=1, replicas=1)
        sides: dict[str, tuple[str, dict[str, str] | None]] = {
            "direct": (base.replace("http", "ws") + QUERY, None),
            "gateway": (platform.url.replace("http", "ws") + "/d/frames" + QUERY,
                        platform.headers)}
        try:
            for url, headers in sides.values():  # warm-up
                asyncio.run(level(url, 1, args.fps, 2.0, frames, headers=headers))
            for n in counts:
                results[n] = {side: [] for side in sides}
                for _ in range(args.rounds):
                    for side, (url, headers) in sides.items():
                        row = asyncio.run(level(url, n, args.fps, args.seconds, frames,
                                                headers=headers))
                        results[n][side].append(row)
        finally:
            stop(proc)
    report(results, args)
    shutil.rmtree(home, ignore_errors=True)


def report(results: dict[int, dict[str, list[dict[str, Any]]]],
           args: argparse.Namespace) -> None:
    table = Table(title=f"Stream frames through the gateway: 240×360 grey at {args.fps:g} fps, "
                        f"batch ≤ {args.batch}, wait {args.wait_ms} ms, {args.rounds} "
                        f"interleaved {args.seconds:g} s windows per side")
    for col in ("streams", "path", "frames", "answered", "dropped", "client p50 ms",
                "client p99 ms", "server p50 ms", "gateway adds p50 ms", "adds p99 ms"):
        table.add_column(col, justify="right")
    for n, sides in results.items():
        pairs = list(zip(sides["direct"], sides["gateway"], strict=True))
        added = {q: median(g[f"client_{q}_ms"] - d[f"client_{q}_ms"] for d, g in pairs)
                 for q in ("p50", "p99")}
        for side, label in (("direct", "direct (kaon serve)"), ("gateway", "gateway (kaon up)")):
            ws = sides[side]
            table.add_row(str(n), label, str(sum(w["frames"] for w in ws)),
                          str(sum(w["answered"] for w in ws)),
                          str(sum(w["dropped"] for w in ws)),
                          f"{median(w['client_p50_ms'] for w in ws):.2f}",
                          f"{median(w['client_p99_ms'] for w in ws):.2f}",
                          f"{median(w['p50_ms'] for w in ws):.2f}",
                          f"{added['p50']:.2f}" if side == "gateway" else "",
                          f"{added['p99']:.2f}" if side == "gateway" else "")
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
