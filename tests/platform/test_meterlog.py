"""The gateway's usage-event writer: journal, replay, group commit; and kill -9 under load."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from kaon.db.engine import session_scope
from kaon.platform import metering
from kaon.platform.metercommit import one_pass
from kaon.platform.meterlog import MeterWriter, replay
from kaon.platform.workspaces import bootstrap

REPO = Path(__file__).resolve().parents[2]


def _period() -> str:
    return time.strftime("%Y-%m", time.gmtime())


def _used() -> int:
    with session_scope() as s:
        return metering.usage(s, "default", _period()).get("inference_requests", 0)


@pytest.fixture(autouse=True)
def workspace(kaon_home: Path) -> None:
    with session_scope() as s:
        bootstrap(s)


@pytest.mark.parametrize("journaled", [True, False])
def test_every_recorded_event_is_committed_once(kaon_home: Path, journaled: bool) -> None:
    writer = MeterWriter(journal=kaon_home / "journal" if journaled else None, rotate_s=0.0)
    writer.start()

    async def calls() -> None:
        await asyncio.gather(*(writer.record("default", "inference_requests", 1, f"r{i % 300}")
                               for i in range(600)))  # each key twice

    asyncio.run(calls())
    writer.stop()
    assert _used() == 300
    if journaled:
        assert list((kaon_home / "journal").glob("*.jsonl")) == []  # all committed: deleted


def test_segments_left_by_a_crash_are_replayed_once(kaon_home: Path) -> None:
    journal = kaon_home / "journal"
    journal.mkdir()
    event = {"workspace_id": "default", "metric": "inference_requests", "quantity": 1,
             "source": {}, "occurred_at": "2026-11-26T20:00:00+00:00"}
    lines = [json.dumps({**event, "event_key": f"crash-{i}"}) for i in range(5)]
    (journal / "0001.jsonl").write_text("\n".join(lines) + '\n{"workspace_id": "def')  # torn
    (journal / "0002.jsonl").write_text(lines[0] + "\n")  # already in the first segment
    assert replay(journal) == 5
    assert list(journal.glob("*.jsonl")) == []
    with session_scope() as s:
        assert metering.usage(s, "default", "2026-11")["inference_requests"] == 5


def test_the_committer_takes_whole_lines_and_deletes_only_finished_segments(
        kaon_home: Path) -> None:
    journal = kaon_home / "journal"
    journal.mkdir()
    event = {"workspace_id": "default", "metric": "inference_requests", "quantity": 1,
             "source": {}, "occurred_at": "2026-11-26T20:00:00+00:00"}
    line = [json.dumps({**event, "event_key": f"c-{i}"}) for i in range(6)]
    old, current = journal / "0001.jsonl", journal / "0002.jsonl"
    old.write_text(line[0] + "\n" + line[1] + "\n")
    current.write_text(line[2] + "\n" + line[3][:20])  # the writer is mid-line
    offsets: dict[Path, int] = {}
    assert one_pass(journal, offsets) == 3
    assert not old.exists() and current.exists()  # a newer segment exists: old is done
    with current.open("a") as f:
        f.write(line[3][20:] + "\n" + line[4] + "\n")
    assert one_pass(journal, offsets) == 2  # the rest of line 3, and line 4
    assert one_pass(journal, offsets) == 0 and current.exists()  # still the newest
    with session_scope() as s:
        assert metering.usage(s, "default", "2026-11")["inference_requests"] == 5


def test_journaled_events_are_committed_while_the_writer_runs(kaon_home: Path) -> None:
    writer = MeterWriter(journal=kaon_home / "journal", linger_s=0.05)
    writer.start()
    try:
        async def calls() -> None:
            for i in range(50):
                await writer.record("default", "inference_requests", 1, f"live-{i}")

        asyncio.run(calls())
        deadline = time.monotonic() + 15  # the committer process starts, then follows
        while _used() < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _used() == 50  # by the committer process: this one has not stopped yet
    finally:
        writer.stop()
    assert _used() == 50 and list((kaon_home / "journal").glob("*.jsonl")) == []


def test_the_committer_leaves_other_writers_segments_alone(kaon_home: Path) -> None:
    journal = kaon_home / "journal"
    journal.mkdir()
    event = {"workspace_id": "default", "metric": "inference_requests", "quantity": 1,
             "source": {}, "occurred_at": "2026-11-26T20:00:00+00:00"}
    for name, key in (("0001-111.jsonl", "a"), ("0002-222.jsonl", "b"), ("0003-111.jsonl", "c")):
        (journal / name).write_text(json.dumps({**event, "event_key": key}) + "\n")
    assert one_pass(journal, {}, writer=111) == 2
    assert sorted(p.name for p in journal.glob("*.jsonl")) == ["0002-222.jsonl", "0003-111.jsonl"]


def test_segment_names_only_grow_even_when_the_clock_steps_back(
        kaon_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = MeterWriter(journal=kaon_home / "journal", rotate_s=0.0)
    writer.journal.mkdir()  # type: ignore[union-attr]
    clock = iter([3_000, 2_000, 1_000])
    monkeypatch.setattr("kaon.platform.meterlog.time.time_ns", lambda: next(clock))
    for _ in range(3):
        writer._open_segment()
        os.close(writer._fd)  # type: ignore[arg-type]
    names = [p.name.split("-")[0] for p in writer.journal.glob("*.jsonl")]  # type: ignore[union-attr]
    assert sorted(names) == [f"{n:020d}" for n in (3_000, 3_001, 3_002)]


def test_a_committer_that_dies_is_started_again_and_nothing_is_lost(kaon_home: Path) -> None:
    writer = MeterWriter(journal=kaon_home / "journal", rotate_s=0.0, linger_s=0.05)
    writer.start()
    try:
        writer._committer.kill()  # type: ignore[union-attr]
        writer._committer.wait()  # type: ignore[union-attr]

        async def calls() -> None:
            for i in range(20):
                await writer.record("default", "inference_requests", 1, f"after-kill-{i}")

        asyncio.run(calls())  # every record rotates (rotate_s=0), and rotation checks
        assert writer.committer_restarts == 1
        deadline = time.monotonic() + 15
        while _used() < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _used() == 20  # by the new committer, before stop
    finally:
        writer.stop()
    assert _used() == 20


@pytest.mark.serial  # times processes on the wall clock: run alone (Makefile)
@pytest.mark.slow
def test_kill_9_under_load_loses_no_2xx_and_counts_none_twice(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from crash_metering import run
    finally:
        sys.path.remove(str(REPO / "bench"))
    result = run(tmp_path / "home", kills=1, seconds=3.0, concurrency=8)
    assert result["ok"] > 20, result
    assert result["missing_2xx"] == 0 and result["duplicate_keys"] == 0, result
    assert result["counter"] == result["recorded_events"], result
