"""The usage committer: follows the gateway's journal and commits its events in batches.

    python -m kaon.platform.metercommit JOURNAL_DIR --writer PID [--linger 0.25]

Started (and stopped) by :class:`~kaon.platform.meterlog.MeterWriter` in its own process,
so the database work stays off the gateway's event loop. Every ``linger`` seconds it reads the
lines its writer (``PID``) added to each of its segments since the last pass (whole lines
only) and commits them; a segment with a later one of the same writer beside it is complete,
and is deleted once all of it is in. Segments of other writers are left alone (a writer
replays those of a dead one at its start). It exits when its writer does: on Linux the kernel
ends it (``PR_SET_PDEATHSIG``), elsewhere it notices that it has a new parent.
A crash anywhere is safe: events are keyed, so lines committed twice count once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from kaon.platform.meterlog import commit_events, parse_lines


def read_new(segment: Path, offset: int) -> tuple[bytes, int]:
    """The whole lines written to ``segment`` past ``offset``, and the offset after them."""
    with segment.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return data[:end], offset + end


def one_pass(journal: Path, offsets: dict[Path, int], writer: int | None = None) -> int:
    """Commit what is new in every segment of ``writer`` (a pid; None: all of them);
    returns how many events were new."""
    segments = sorted(journal.glob(f"*-{writer}.jsonl" if writer else "*.jsonl"))
    new = 0
    for i, segment in enumerate(segments):
        complete = i < len(segments) - 1  # listed before reading: the writer has moved on
        data, offsets[segment] = read_new(segment, offsets.get(segment, 0))
        new += commit_events(parse_lines(data))
        if complete:
            segment.unlink(missing_ok=True)
            offsets.pop(segment)
    return new


def follow(journal: Path, writer: int, linger: float) -> None:
    offsets: dict[Path, int] = {}
    while os.getppid() == writer:
        try:
            one_pass(journal, offsets, writer)
        except Exception as exc:  # the database is away: keep the lines, try again
            print(f"kaon meter committer: {type(exc).__name__}: {exc}", file=sys.stderr)
            offsets.clear()  # re-read from the start: committed lines count once
            time.sleep(1.0)
            continue
        time.sleep(linger)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("journal", type=Path)
    parser.add_argument("--writer", type=int, required=True, help="the writer's pid")
    parser.add_argument("--linger", type=float, default=0.25)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole group
        follow(args.journal, args.writer, args.linger)


if __name__ == "__main__":
    main()
