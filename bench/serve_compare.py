"""Serving throughput and latency: Kaon vs LitServe vs plain FastAPI, plus the in-process ceiling.

    python bench/serve_compare.py [--models mnist-cnn,resnet18] [--concurrency 1,16,64]
                                  [--window 4] [--batch 32] [--wait-ms 5] [--skip-litserve]
                                  [--v2-images 32,128]

Every server runs the same registered model (random weights) through the same Kaon
``RegistryPredictor`` with one model worker process, so only the serving stack differs.
Kaon and LitServe batch with the same max batch size and wait; the plain FastAPI app calls
the model once per request. Load comes from ``wrk`` (C, one thread) when it is installed,
else from Kaon's Python load generator; either way the Triton perf_analyzer method: warm up,
then fixed windows until the last three agree within 10%, and report those three.
The ceiling is the model's own batched throughput in this process, without HTTP.
``--v2-images`` adds a table for clients that send many images per request (Kaon alone,
Open Inference Protocol binary tensors): images/s against the same ceiling.
Needs LitServe (``.venv/bin/pip install -e '.[bench]'``, the version measured) and, for the
lighter load generator, ``apt-get install wrk``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
console = Console(width=180)  # the table stays readable when the output is a file

MODELS: dict[str, dict[str, Any]] = {
    "mnist-cnn": yaml.safe_load((REPO / "examples/mnist_cnn.yaml").read_text()),
    # ResNet-18's shape (4 stages of 2 basic blocks, widths 64..512, ~11M parameters) on 28 px.
    "resnet18": {"name": "resnet18", "data": {"dataset": "mnist"},
                 "model": {"family": "resnet-small", "width": 64, "blocks": [2, 2, 2, 2]}},
}


def register_models(names: list[str]) -> None:
    from kaon.nn import build_model, parse_spec
    from kaon.registry import Signature, register

    sig = Signature(shape=(1, 28, 28), mean=[0.1307], std=[0.3081],
                    class_names=[str(i) for i in range(10)])
    for name in names:
        spec = parse_spec({**MODELS[name], "name": name})
        torch.manual_seed(0)
        model = build_model(spec, sig.shape, 10)
        register(name, model.state_dict(), spec=spec.model_dump(mode="json"), signature=sig,
                 dataset="mnist", dataset_hash="0" * 64)
        params = sum(p.numel() for p in model.parameters())
        console.print(f"registered {name}: {params:,} parameters (random weights)")


def ceiling(ref: str, batch: int, device: torch.device, seconds: float = 5.0) -> float:
    """Images/s of the model alone at ``batch`` images per call, in this process."""
    from kaon.serve import RegistryPredictor

    torch.set_num_threads(os.cpu_count() or 1)
    predictor = RegistryPredictor.from_ref(ref, device=device)
    images = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8)
    for _ in range(3):
        predictor.predict(images)
    rates = []
    for _ in range(3):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            predictor.predict(images)
            done += batch
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def start(kind: str, ref: str, port: int, batch: int, wait_ms: float,
          env: dict[str, str], threads: int = 0,
          device: str = "auto", replicas: int = 1,
          extra: tuple[str, ...] = (), cwd: Path | None = None,
          ) -> tuple[subprocess.Popen[bytes], str, str]:
    py = sys.executable
    if kind == "kaon":
        cmd = [py, "-m", "kaon.cli.main", "serve", ref, "--port", str(port),
               "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms),
               "--threads", str(threads), "--device", device, "--replicas", str(replicas),
               *extra]
        health, path = "/readyz", f"/v1/models/{ref.split(':')[0]}/predict"
    elif kind == "litserve":
        cmd = [py, str(REPO / "bench/servers/litserve_app.py"), ref, str(port), str(batch),
               str(wait_ms), device]
        health, path = "/health", "/predict"
    else:
        cmd = [py, str(REPO / "bench/servers/plain_fastapi.py"), ref, str(port), device]
        health, path = "/health", "/predict"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=cwd)  # stop() ends its children too
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(base + health, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{kind} server never became ready")
        time.sleep(0.3)
    return proc, base + path, base


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End the server and every process it started (LitServe's workers, Kaon's replicas)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


_LAT = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_window(url: str, body_file: Path, concurrency: int, seconds: float) -> dict[str, float]:
    script = body_file.with_suffix(".lua")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
         "--timeout", "30s", "-s", str(script), url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: float(v) * _UNIT[u] for p, v, u in _LAT.findall(out)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?timeout (\d+)", out)
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"],
            "errors": float(bad.group(1) if bad else 0) + float(errors.group(1) if errors else 0)}


def wrk_script(body_file: Path, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> Path:
    """Write ``body`` and the wrk script that POSTs it (``body_file`` with ``.lua``)."""
    body_file.write_text(json.dumps(body))
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    body_file.with_suffix(".lua").write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n' + extra
        + f'local f = io.open("{body_file}", "r")\nwrk.body = f:read("*all")\nf:close()\n')
    return body_file


def v2_binary_script(body_file: Path, images: np.ndarray) -> Path:
    """Write an Open Inference Protocol request carrying ``images`` (uint8 N×H×W) as binary
    tensor data, and the wrk script that POSTs it (``body_file`` with ``.lua``)."""
    header = json.dumps({
        "inputs": [{"name": "input", "shape": list(images.shape), "datatype": "UINT8",
                    "parameters": {"binary_data_size": images.nbytes}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    body_file.write_bytes(header + images.tobytes())
    body_file.with_suffix(".lua").write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/octet-stream"\n'
        f'wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\n')
    return body_file


def measure(url: str, body: dict[str, Any], concurrency: int, window: float,
            workdir: Path, headers: dict[str, str] | None = None,
            script: Path | None = None) -> dict[str, float]:
    """perf_analyzer's method on ``url``: warm-up, then windows until three agree; ``script``
    (a body file with its ``.lua``) replaces the JSON ``body``, and needs wrk."""
    if shutil.which("wrk") is None:
        from kaon.serve.loadgen import measure as py_measure

        (level,) = asyncio.run(py_measure(url, body, [concurrency], window_s=window,
                                          headers=headers))
        return {"rps": level.requests_per_s, "p50": level.p50_ms, "p99": level.p99_ms,
                "errors": level.errors, "windows": level.windows, "stable": level.stable}
    body_file = script or wrk_script(workdir / "body.json", body, headers)
    wrk_window(url, body_file, concurrency, 2)  # warm-up
    windows: list[dict[str, float]] = []
    stable = False
    while len(windows) < 8:
        windows.append(wrk_window(url, body_file, concurrency, window))
        last = [w["rps"] for w in windows[-3:]]
        if len(last) == 3 and max(last) <= min(last) * 1.10:
            stable = True
            break
    chosen = windows[-3:]
    return {"rps": statistics.mean(w["rps"] for w in chosen),
            "p50": statistics.mean(w["p50"] for w in chosen),
            "p99": statistics.mean(w["p99"] for w in chosen),
            "errors": sum(w["errors"] for w in chosen), "windows": len(windows),
            "stable": stable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist-cnn,resnet18")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--wait-ms", type=float, default=5.0)
    parser.add_argument("--skip-litserve", action="store_true")
    parser.add_argument("--skip-fastapi", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="kaon serve --threads (0: its default)")
    parser.add_argument("--device", default="auto",
                        help="auto (the GPU when there is one), cpu or cuda[:N]; all servers")
    parser.add_argument("--v2-images", default="",
                        help="also: Kaon alone, Open Inference Protocol binary requests of "
                             "these many images each (e.g. 32,128), against the ceiling")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write rows here")
    args = parser.parse_args()
    names = [m for m in args.models.split(",") if m]
    levels = [int(c) for c in args.concurrency.split(",")]
    kinds = ["kaon", *([] if args.skip_litserve else ["litserve"]),
             *([] if args.skip_fastapi else ["fastapi"])]

    home = Path(tempfile.mkdtemp(prefix="kaon-serve-bench-"))
    os.environ["KAON_HOME"] = str(home)
    env = {**os.environ, "KAON_HOME": str(home)}
    register_models(names)
    from kaon.net import free_port
    from kaon.nn.devices import resolve_device

    device = resolve_device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    console.print(f"load generator: {'wrk' if shutil.which('wrk') else 'python (httpx)'}; "
                  f"{os.cpu_count()} CPU cores; torch {torch.__version__}; "
                  f"device {device} ({card})")
    rows: list[dict[str, Any]] = []
    body = {"inputs": [np.random.default_rng(0).integers(0, 256, (28, 28)).tolist()]}
    for name in names:
        ref = f"{name}:1"
        top = ceiling(ref, args.batch, device)
        console.print(f"{name}: in-process ceiling {top:,.0f} images/s at batch {args.batch}")
        for kind in kinds:
            proc, url, _ = start(kind, ref, free_port(), args.batch, args.wait_ms, env,
                                 args.threads, str(device))
            try:
                for c in levels:
                    r = measure(url, body, c, args.window, home)
                    rows.append({"model": name, "server": kind, "concurrency": c, **r,
                                 "ceiling": top})
                    console.print(f"  {kind:9s} c={c:3d}: {r['rps']:8.1f} req/s  "
                                  f"p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
                                  f"errors {r['errors']:.0f}  windows {r['windows']}")
            finally:
                stop(proc)
    table = Table(title=f"Serving, 1 image/request, batch ≤ {args.batch}, wait {args.wait_ms} "
                        f"ms, 1 model worker each, on {device} ({card})")
    for col in ("model", "concurrency", "kaon req/s", "kaon p50/p99 ms", "litserve req/s",
                "litserve p50/p99 ms", "fastapi req/s", "fastapi p50/p99 ms",
                "kaon / litserve", "kaon / fastapi", "kaon / ceiling"):
        table.add_column(col, justify="right")
    for name in names:
        for c in levels:
            got = {r["server"]: r for r in rows if r["model"] == name and r["concurrency"] == c}
            k, lit, fa = got["kaon"], got.get("litserve"), got.get("fastapi")

            def cell(r: dict[str, Any] | None) -> tuple[str, str]:
                if r is None:
                    return "-", "-"
                return f"{r['rps']:.0f}", f"{r['p50']:.1f} / {r['p99']:.1f}"

            table.add_row(name, str(c), *cell(k), *cell(lit), *cell(fa),
                          f"{k['rps'] / lit['rps']:.2f}x" if lit else "-",
                          f"{k['rps'] / fa['rps']:.2f}x" if fa else "-",
                          f"{k['rps'] / k['ceiling']:.2f}")
    console.print(table)
    if args.v2_images:
        rows += batched_clients(names, [int(n) for n in args.v2_images.split(",")], levels,
                                args, env, home, device,
                                {r["model"]: r["ceiling"] for r in rows})
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    shutil.rmtree(home, ignore_errors=True)


def batched_clients(names: list[str], sizes: list[int], levels: list[int],
                    args: argparse.Namespace, env: dict[str, str], home: Path,
                    device: torch.device, ceilings: dict[str, float]) -> list[dict[str, Any]]:
    """Kaon with clients that send many images per request (V2 binary tensors): images/s
    against the in-process ceiling. The queue holds every image in flight (no 503s)."""
    from kaon.net import free_port

    rows: list[dict[str, Any]] = []
    table = Table(title=f"Kaon, Open Inference Protocol binary requests of N images, batch ≤ "
                        f"{args.batch}, wait {args.wait_ms} ms")
    for col in ("model", "N", "concurrency", "req/s", "p50 / p99 ms", "images/s",
                "÷ ceiling"):
        table.add_column(col, justify="right")
    queue = str(max(sizes) * max(levels))
    for name in names:
        proc, _, base = start("kaon", f"{name}:1", free_port(), args.batch, args.wait_ms, env,
                              args.threads, str(device), extra=("--max-queue", queue))
        try:
            for n in sizes:
                images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
                script = v2_binary_script(home / f"v2-{n}.bin", images)
                for c in levels:
                    r = measure(f"{base}/v2/models/{name}/infer", {}, c, args.window, home,
                                script=script)
                    rows.append({"model": name, "server": "kaon-v2-binary", "images": n,
                                 "concurrency": c, **r, "ceiling": ceilings[name]})
                    table.add_row(name, str(n), str(c), f"{r['rps']:.0f}",
                                  f"{r['p50']:.1f} / {r['p99']:.1f}", f"{r['rps'] * n:,.0f}",
                                  f"{r['rps'] * n / ceilings[name]:.2f}"
                                  + (f" ({r['errors']:.0f} errors)" if r["errors"] else ""))
        finally:
            stop(proc)
    console.print(table)
    return rows


if __name__ == "__main__":
    main()
