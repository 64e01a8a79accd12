"""Stream capacity: how many 25 fps streams of 240×360 grey frames one server sustains.

    python bench/serve_streams.py [--seconds 8] [--fps 25] [--max-streams 64] [--threads N]
                                  [--wait-ms 2] [--replicas N] [--client-deflate]

A small frame model (three strided convolutions and global pooling; random weights) is
registered and served by ``kaon serve``. For 1, 2, 4, … streams, each stream opens
``/v1/models/frames/stream?policy=drop_oldest`` and sends raw uint8 tensor frames at the frame
rate for ``--seconds``. A level passes when no frame was dropped, the p99 per-frame latency
is at most 100 ms both as the server reports it (receipt to result, in the replica) and on
the client's clock (send to result: with ``--replicas`` it includes the front's hop), and no
frame went out more than 100 ms after its time on the frame clock (a client that falls
behind sends late and then in bursts, so a level it cannot drive does not count). The table
shows every level tried and the largest passing one, with the slowest stream's average
sending rate and the latest send.
Per-frame overhead is the server-reported latency minus the model call of the frame's
batch, at one stream: what the runtime adds around the model.
The load generator runs on the same machine (it shares the CPU with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from serve_compare import start, stop  # noqa: E402

console = Console(width=180)  # the table stays readable when the output is a file
H, W = 240, 360
SPEC = {"name": "frames", "data": {"dataset": "mnist"}, "model": {"layers": [
    {"type": "conv2d", "filters": 8, "kernel_size": 5, "stride": 4, "activation": "relu"},
    {"type": "conv2d", "filters": 16, "kernel_size": 3, "stride": 2, "activation": "relu"},
    {"type": "conv2d", "filters": 32, "kernel_size": 3, "stride": 2, "activation": "relu"},
    {"type": "global_avg_pool"},
    {"type": "dense", "units": 2, "activation": "softmax"}]}}


def register_frame_model() -> int:
    from kaon.nn import build_model, parse_spec
    from kaon.registry import Signature, register

    sig = Signature(shape=(1, H, W), mean=[0.5], std=[0.25], class_names=["normal", "anomaly"])
    spec = parse_spec(SPEC)
    torch.manual_seed(0)
    model = build_model(spec, sig.shape, 2)
    register("frames", model.state_dict(), spec=spec.model_dump(mode="json"), signature=sig,
             dataset="ucsd-ped2", dataset_hash="0" * 64)
    return sum(p.numel() for p in model.parameters())


def frame_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)
    header = json.dumps({"shape": [H, W], "dtype": "uint8"}).encode()
    return b"KTNS" + struct.pack("<I", len(header)) + header + pixels.tobytes()


async def one_stream(url: str, fps: float, seconds: float, frames: list[bytes],
                     results: list[dict[str, Any]], deflate: bool,
                     headers: dict[str, str] | None = None) -> tuple[float, float]:
    """Send ``fps * seconds`` frames on the frame rate's clock; return the average rate the
    frames really went out at and the latest send after its time, in seconds (a client that
    falls behind sends late, then in a burst)."""
    from websockets.asyncio.client import connect

    # without --client-deflate the client does not offer permessage-deflate: zlib on every
    # 86 KB frame would make this one-process client, not the server, the bottleneck
    async with connect(url, max_size=None, additional_headers=headers,
                       compression="deflate" if deflate else None) as ws:
        count = int(fps * seconds)
        sent_at: list[float] = []

        async def receive() -> None:
            for _ in range(count):
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if "error" in message:
                    raise RuntimeError(message)
                message["client_ms"] = (time.perf_counter() - sent_at[message["seq"]]) * 1000
                results.append(message)
                if message.get("seq", -1) >= count - 1:
                    return

        reader = asyncio.ensure_future(receive())
        start_at = time.perf_counter()
        for i in range(count):
            delay = start_at + i / fps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at.append(time.perf_counter())
            await ws.send(frames[i % len(frames)])
        await reader
        span = sent_at[-1] - start_at
        lag = max(at - (start_at + i / fps) for i, at in enumerate(sent_at))
        return ((count - 1) / span if span > 0 else float("inf")), lag


def _p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


async def level(url: str, streams: int, fps: float, seconds: float,
                frames: list[bytes], deflate: bool = False,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    per_stream: list[list[dict[str, Any]]] = [[] for _ in range(streams)]
    sends = await asyncio.gather(*(one_stream(url, fps, seconds, frames, per_stream[i], deflate,
                                              headers) for i in range(streams)))
    results = [r for rs in per_stream for r in rs]
    latencies = sorted(r["latency_ms"] for r in results)
    client = sorted(r["client_ms"] for r in results)
    overhead = sorted(r["latency_ms"] - r["model_ms"] for r in results)
    sent = int(fps * seconds) * streams
    dropped = sum(max((r.get("dropped_total", 0) for r in rs), default=0) for rs in per_stream)
    slowest = min(rate for rate, _ in sends)
    lag_ms = max(lag for _, lag in sends) * 1000
    p99, client_p99 = _p(latencies, 0.99), _p(client, 0.99)
    return {"streams": streams, "frames": sent, "answered": len(results), "dropped": dropped,
            "sent_fps": slowest, "lag_ms": lag_ms, "p50_ms": _p(latencies, 0.5),
            "client_p50_ms": _p(client, 0.5),
            "p99_ms": p99, "client_p99_ms": client_p99, "overhead_p50_ms": _p(overhead, 0.5),
            # the level counts only if every frame really went out on the frame clock
            "pass": dropped == 0 and p99 <= 100.0 and client_p99 <= 100.0 and lag_ms <= 100.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--max-streams", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0, help="kaon serve --threads")
    parser.add_argument("--replicas", type=int, default=1, help="kaon serve --replicas")
    parser.add_argument("--client-deflate", action="store_true",
                        help="the client offers permessage-deflate, as browsers do")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kaon-stream-bench-"))
    os.environ["KAON_HOME"] = str(home)
    params = register_frame_model()
    from kaon.net import free_port

    proc, _, base = start("kaon", "frames:1", free_port(), args.batch, args.wait_ms,
                          {**os.environ}, args.threads, replicas=args.replicas)
    url = base.replace("http", "ws") + "/v1/models/frames/stream?policy=drop_oldest&max_pending=8"
    frames = [frame_bytes(i) for i in range(16)]
    rows = []
    try:
        asyncio.run(level(url, 1, args.fps, 2.0, frames, args.client_deflate))  # warm-up
        streams = 1
        while streams <= args.max_streams:
            row = asyncio.run(level(url, streams, args.fps, args.seconds, frames,
                                   args.client_deflate))
            rows.append(row)
            console.print(row)
            if not row["pass"]:
                break
            streams *= 2
    finally:
        stop(proc)
    table = Table(title=f"Streams of {H}×{W} grey frames at {args.fps:g} fps, {args.seconds:g} s "
                        f"each; frame model {params:,} parameters; batch ≤ {args.batch}, "
                        f"wait {args.wait_ms} ms; {args.replicas} replica(s); client "
                        f"{'offers' if args.client_deflate else 'without'} permessage-deflate")
    for col in ("streams", "frames sent", "slowest stream's fps", "latest send ms", "answered",
                "dropped", "p50 ms", "p99 ms", "client p99 ms", "overhead p50 ms",
                "no drops, p99s and latest send ≤ 100 ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["streams"]), str(r["frames"]), f"{r['sent_fps']:.1f}",
                      f"{r['lag_ms']:.0f}", str(r["answered"]), str(r["dropped"]),
                      f"{r['p50_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", f"{r['client_p99_ms']:.1f}",
                      f"{r['overhead_p50_ms']:.2f}", "yes" if r["pass"] else "no")
    console.print(table)
    passing = [r["streams"] for r in rows if r["pass"]]
    console.print(f"Most concurrent streams sustained: {max(passing) if passing else 0}; "
                  f"per-frame overhead at 1 stream, p50: {rows[0]['overhead_p50_ms']:.2f} ms")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
