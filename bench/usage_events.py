"""Usage-event throughput on SQLite and PostgreSQL.

    python bench/usage_events.py [--events 20000] [--pg postgresql+psycopg://postgres@127.0.0.1/test]

Two ways in, each on both databases (a fresh SQLite file; a fresh PostgreSQL schema):
- ``record_many``: batches of 1,000 events per transaction (a job writing its meters);
- ``MeterWriter`` group commit: ``--events`` callers each awaiting their own event's commit
  (one transaction per wake-up of the writer thread);
- ``MeterWriter`` with a journal, as ``kaon up`` runs it: one caller after another, each
  acknowledged once its line is in the journal, timed until all are committed.
The baseline, in the same run, is one transaction per event (``record``), the naive way.
Each event is durable (committed, unique key) before it is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text


def databases(pg_url: str) -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = [
        ("SQLite", f"sqlite:///{tempfile.mkdtemp(prefix='kaon-events-')}/kaon.db", None)]
    try:
        admin = create_engine(pg_url)
        schema = f"kaon_bench_{uuid.uuid4().hex[:8]}"
        with admin.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
        out.append(("PostgreSQL", f"{pg_url}?options=-csearch_path%3D{schema}",
                    (admin, schema)))
    except Exception as exc:  # no server: SQLite only
        Console().print(f"[yellow]PostgreSQL not reachable ({exc}); SQLite only[/]")
    return out


def run(url: str, events: int) -> dict[str, float]:
    os.environ["KAON_DATABASE_URL"] = url
    from kaon.config import reset_settings

    reset_settings()
    from kaon.db.engine import session_scope
    from kaon.platform import metering
    from kaon.platform.meterlog import MeterWriter
    from kaon.platform.workspaces import bootstrap

    with session_scope() as s:
        bootstrap(s)
    tag = uuid.uuid4().hex[:6]

    def event(i: int, kind: str) -> dict[str, Any]:
        return {"workspace_id": "default", "metric": "inference_requests", "quantity": 1,
                "event_key": f"{tag}-{kind}-{i}"}

    naive_n = min(events, 2000)
    started = time.perf_counter()
    for i in range(naive_n):
        with session_scope() as s:
            metering.record(s, **event(i, "one"))
    naive = naive_n / (time.perf_counter() - started)

    started = time.perf_counter()
    for first in range(0, events, 1000):
        with session_scope() as s:
            metering.record_many(s, [event(i, "many") for i in range(first,
                                                                      min(events, first + 1000))])
    batched = events / (time.perf_counter() - started)

    writer = MeterWriter()
    writer.start()

    async def callers() -> None:
        await asyncio.gather(*(writer.record("default", "inference_requests", 1,
                                             f"{tag}-group-{i}") for i in range(events)))

    started = time.perf_counter()
    asyncio.run(callers())
    grouped = events / (time.perf_counter() - started)
    writer.stop()

    journaled = MeterWriter(journal=Path(tempfile.mkdtemp(prefix="kaon-journal-")))
    journaled.start()

    async def journal_callers() -> None:
        for i in range(events):  # each returns once its line is in the journal
            await journaled.record("default", "inference_requests", 1, f"{tag}-journal-{i}")

    started = time.perf_counter()
    asyncio.run(journal_callers())
    journaled.stop()  # ... and this returns once every event is committed
    journal = events / (time.perf_counter() - started)
    with session_scope() as s:
        counted = metering.usage(s, "default", time.strftime("%Y-%m", time.gmtime()))
    return {"naive": naive, "record_many": batched, "group": grouped, "journal": journal,
            "counted": counted.get("inference_requests", 0),
            "expected": naive_n + 3 * events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    table = Table(title=f"Usage events/s ({args.events:,} per way; goal ≥ 5,000/s)")
    for col in ("database", "one txn per event (baseline)", "record_many ×1000",
                "MeterWriter group commit", "MeterWriter journal → DB", "counted = written"):
        table.add_column(col, justify="right")
    for name, url, cleanup in databases(args.pg):
        try:
            r = run(url, args.events)
        finally:
            if cleanup is not None:
                admin, schema = cleanup
                with admin.begin() as conn:
                    conn.execute(text(f"drop schema {schema} cascade"))
        ok = "yes" if r["counted"] == r["expected"] else f"NO ({r['counted']}/{r['expected']})"
        table.add_row(name, f"{r['naive']:,.0f}", f"{r['record_many']:,.0f}",
                      f"{r['group']:,.0f}", f"{r['journal']:,.0f}", ok)
    Console().print(table)


if __name__ == "__main__":
    main()
