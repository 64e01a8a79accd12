"""``kaon bench``: measure a served model's throughput and latency."""

from __future__ import annotations

from typing import Any

import typer

from kaon.cli.output import console, print_json

app = typer.Typer(help="Benchmarks.\n\nExample: kaon bench serve mnist-mlp@production",
                  no_args_is_help=True)


@app.command("serve")
def serve(
    model: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
    concurrency: str = typer.Option("1,16,64", "--concurrency", help="Comma-separated levels."),
    window: float = typer.Option(5.0, "--window", min=0.5,
                                 help="Seconds per measurement window."),
    images: int = typer.Option(1, "--images", min=1, help="Images per request."),
    max_batch_size: int = typer.Option(32, "--max-batch-size", min=1),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0),
    replicas: int = typer.Option(1, "--replicas", min=1),
    json_: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Start `kaon serve` on a free port, load it at each concurrency, print a table.

    Windows repeat until three agree on throughput within 10% (as perf_analyzer does).

    Examples:

        kaon bench serve mnist-mlp@production

        kaon bench serve mnist-cnn:1 --concurrency 1,8,32 --max-batch-size 64 --json
    """
    import asyncio
    import os
    import subprocess
    import sys
    import tempfile

    import numpy as np

    from kaon import Client
    from kaon.errors import ConfigError
    from kaon.net import free_port
    from kaon.registry import get
    from kaon.serve.loadgen import measure

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ConfigError(f"--concurrency {concurrency!r} needs positive integers.",
                          hint="E.g. --concurrency 1,16,64.")
    info = get(model)
    port = free_port()
    with tempfile.TemporaryFile() as log:  # the server's stderr: shown if it cannot start
        server = subprocess.Popen(
            [sys.executable, "-m", "kaon.cli.main", "serve", info.ref, "--port", str(port),
             "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms),
             "--replicas", str(replicas)], env=dict(os.environ), stdout=subprocess.DEVNULL,
            stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            with Client(url) as client:
                _wait_started(server, client, log)
            image = np.zeros(info.signature.shape, dtype=np.uint8).tolist()
            body = {"inputs": [image] * images}
            rows = asyncio.run(measure(f"{url}/v1/models/{info.name}/predict", body, levels,
                                       window_s=window))
        finally:
            server.terminate()
            server.wait(timeout=30)
    if json_:
        print_json([r.__dict__ for r in rows])
        return
    from rich.table import Table

    table = Table(title=f"{info.ref}: {images} image(s)/request, batch ≤ {max_batch_size}, "
                        f"wait {max_wait_ms} ms, {replicas} replica(s)")
    for col in ("concurrency", "requests/s", "p50 ms", "p99 ms", "errors", "windows"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.concurrency), f"{r.requests_per_s:.1f}", f"{r.p50_ms:.2f}",
                      f"{r.p99_ms:.2f}", str(r.errors),
                      f"{r.windows}{'' if r.stable else ' (unstable)'}")
    console.print(table)


def _wait_started(server: Any, client: Any, log: Any, timeout: float = 120.0) -> None:
    """Until the server is ready; a server that exits first is an error with its last lines."""
    import time

    from kaon.errors import UnavailableError

    deadline = time.monotonic() + timeout
    while not client.ready():
        if server.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-6:]
            raise UnavailableError(
                f"The server exited (code {server.returncode}) before it was ready:\n"
                + "\n".join(tail), hint="Fix what it says, then run the benchmark again.")
        if time.monotonic() > deadline:
            raise UnavailableError(f"The server was not ready after {timeout:.0f}s.",
                                   hint="Is the model large, or the machine busy? Try "
                                        "`kaon serve` alone to see its log.")
        time.sleep(0.1)
