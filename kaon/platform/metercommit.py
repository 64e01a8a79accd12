"""The usage committer: follows the gateway's journal and commits its events in batches.

    python -m kaon.platform.metercommit JOURNAL_DIR [--linger 0.25]

Started (and stopped) by :class:`~kaon.platform.meterlog.MeterWriter` in its own process,
so the database work stays off the gateway's event loop. Every ``linger`` seconds it reads the
lines added to each segment since its last pass (whole lines only) and commits them; a
segment that has a newer one beside it is complete, and is deleted once all of it is in.
A crash anywhere is safe: events are keyed, so lines committed twice count once.
"""

from __future__ import annotations

import argparse
import contextlib
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


def one_pass(journal: Path, offsets: dict[Path, int]) -> int:
    """Commit what is new in every segment; returns how many events were new."""
    segments = sorted(journal.glob("*.jsonl"))
    new = 0
    for i, segment in enumerate(segments):
        complete = i < len(segments) - 1  # listed before reading: the writer has moved on
        data, offsets[segment] = read_new(segment, offsets.get(segment, 0))
        new += commit_events(parse_lines(data))
        if complete:
            segment.unlink(missing_ok=True)
            offsets.pop(segment)
    return new


def follow(journal: Path, linger: float) -> None:
    offsets: dict[Path, int] = {}
    while True:
        try:
            one_pass(journal, offsets)
        except Exception as exc:  # the database is away: keep the lines, try again
            print(f"kaon meter committer: {type(exc).__name__}: {exc}", file=sys.stderr)
            offsets.clear()  # re-read from the start: committed lines count once
            time.sleep(1.0)
            continue
        time.sleep(linger)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("journal", type=Path)
    parser.add_argument("--linger", type=float, default=0.25)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole group
        follow(args.journal, args.linger)


if __name__ == "__main__":
    main()
