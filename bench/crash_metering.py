"""Crash test: kill -9 the platform under a steady metered load; no 2xx may go unrecorded.

    python bench/crash_metering.py [--kills 3] [--seconds 4] [--concurrency 16]

`kaon up` serves a deployment; clients send predict requests through the gateway, each
with its own X-Request-ID, and remember which ones got a 2xx. Mid-load the platform process
is killed with SIGKILL (its replicas die with it), restarted on the same home and port, and
the load goes on. At the end every 2xx request id must appear in ``usage_events`` exactly
once (the gateway draws each event's key, unique; the request id is in the event's source,
and no id may appear twice). Requests cut off by the kill may
or may not have been recorded; they never got a 2xx, so either is correct.
Plans: a test plan file without a hard cap and with a high rate limit, so the group-commit
metering path is the one exercised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]


def open_plans(path: Path) -> Path:
    """The shipped plans with the free plan uncapped, effectively unthrottled, and allowed a
    few deployments of a few replicas."""
    shipped = (REPO / "kaon/platform/plans.toml").read_text()
    free = re.search(r"\[plans\.free\].*?(?=\n\[plans\.|\Z)", shipped, flags=re.S)
    assert free is not None
    block = re.sub(r"rate_limit_rps = [\d.]+", "rate_limit_rps = 100000.0", free[0])
    block = re.sub(r"burst = \d+", "burst = 100000", block)
    block = re.sub(r"hard_cap = true", "hard_cap = false", block)
    block = re.sub(r"max_deployments = \d+", "max_deployments = 4", block)
    block = re.sub(r"max_replicas = \d+", "max_replicas = 4", block)
    path.write_text(shipped.replace(free[0], block))
    return path


def register_digits(hidden: int) -> None:
    """A small MLP for 1×28×28 digits with random weights, registered as ``digits:1``."""
    from kaon.nn import build_model, parse_spec
    from kaon.registry import Signature, register

    spec = parse_spec({"name": "digits", "data": {"dataset": "mnist"},
                       "model": {"family": "mlp", "hidden": [hidden]}})
    sig = Signature(shape=(1, 28, 28), mean=[0.1307], std=[0.3081],
                    class_names=[str(i) for i in range(10)])
    register("digits", build_model(spec, sig.shape, 10).state_dict(),
             spec=spec.model_dump(mode="json"), signature=sig, dataset="mnist",
             dataset_hash="0" * 64)


async def load(url: str, key: str, until: float, concurrency: int, ok: set[str],
               failed: list[str]) -> None:
    body = {"inputs": [np.zeros((28, 28), dtype=int).tolist()]}
    async with httpx.AsyncClient(timeout=10) as client:
        async def user() -> None:
            while time.monotonic() < until:
                rid = uuid.uuid4().hex
                try:
                    r = await client.post(f"{url}/d/digits/v1/models/digits/predict",
                                          json=body, headers={"Authorization": f"Bearer {key}",
                                                              "X-Request-ID": rid})
                    (ok.add(rid) if 200 <= r.status_code < 300 else failed.append(rid))
                except httpx.HTTPError:
                    failed.append(rid)
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(user() for _ in range(concurrency)))


def run(home: Path, kills: int = 1, seconds: float = 3.0, concurrency: int = 16) -> dict[str, Any]:
    from kaon.config import reset_settings
    from kaon.platform.launch import PlatformProcess

    home.mkdir(parents=True, exist_ok=True)
    env = {"KAON_PLANS_FILE": str(open_plans(home / "plans.toml")), "KAON_DOWNLOAD": "false"}
    import os

    os.environ["KAON_HOME"] = str(home)
    reset_settings()
    register_digits(hidden=16)
    platform = PlatformProcess(home, env=env).start()
    platform.deploy("digits", "digits")
    ok: set[str] = set()
    failed: list[str] = []
    rounds = []
    try:
        for _ in range(kills):
            start_ok = len(ok)

            async def round_() -> None:
                until = time.monotonic() + seconds
                loader = asyncio.ensure_future(load(platform.url, platform.key or "", until,
                                                    concurrency, ok, failed))
                await asyncio.sleep(seconds / 2)
                platform.kill()
                await loader

            asyncio.run(round_())
            rounds.append(len(ok) - start_ok)
            platform.start()
            platform.wait_ready("digits")
        asyncio.run(load(platform.url, platform.key or "", time.monotonic() + seconds / 2,
                         concurrency, ok, failed))
    finally:
        platform.stop()
    engine = create_engine(f"sqlite:///{home / 'kaon.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("select event_key, source from usage_events "
                                 "where metric = 'inference_requests'")).all()
        counter = conn.execute(text(
            "select coalesce(sum(used), 0) from usage_counters "
            "where metric = 'inference_requests'")).scalar_one()
    engine.dispose()
    keys = [key for key, _ in rows]
    # the gateway draws each event's key itself; the caller's request id is in its source
    ids = [(json.loads(source) if isinstance(source, str) else source)["request_id"]
           for _, source in rows]
    recorded = set(ids)
    return {"kills": kills, "ok": len(ok), "failed_or_cut": len(failed),
            "recorded_events": len(keys), "missing_2xx": len(ok - recorded),
            "duplicate_keys": len(keys) - len(set(keys)) + len(ids) - len(recorded),
            "counter": int(counter),
            "recorded_without_2xx": len(recorded - ok), "ok_per_round": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    result = run(Path(tempfile.mkdtemp(prefix="kaon-crash-")), args.kills, args.seconds,
                 args.concurrency)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"kill -9 under load: {args.kills} kill(s), {args.concurrency} clients")
    for col in result:
        table.add_column(col.replace("_", " "), justify="right")
    table.add_row(*(str(v) for v in result.values()))
    Console().print(table)
    verdict = result["missing_2xx"] == 0 and result["duplicate_keys"] == 0 and \
        result["counter"] == result["recorded_events"]
    Console().print("every 2xx recorded exactly once" if verdict else "[red]FAILED[/]")


if __name__ == "__main__":
    main()
