"""Does ``kaon tune --time T`` end on time when its final retrain is slowed down?

    python bench/tune_deadline.py [--data breastmnist] [--time 3m] [--hogs 2] [--seed 0]
                                  [--base REV]

The search reserves time for the final retrain from an estimate. When the machine gets
busier once the retrain has started (another job, a noisy neighbour), the estimate is too
hopeful. This bench makes that happen: it runs ``kaon tune ... --json`` as a user would and,
the moment the retrain's run appears in the database, starts ``--hogs`` busy-looping
processes that share the cores with it until the command ends.

Both sides run the same command, one after the other: the working tree, whose retrain ends
by the budget's clock (a ``Deadline`` callback, decision 0021), and ``--base``, by default
the commit before that callback (the retrain then trains every epoch it planned). The base
runs from a ``git worktree`` of REV with its own ``KAON_HOME``. The table gives the command's
wall time against the budget (the goal is within 5%), the retrain's epochs (trained of
planned) and seconds, and the test accuracy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
BEFORE_DEADLINE = "d194aab^"  # the commit before the retrain's Deadline callback
console = Console(width=140)  # the table stays readable when the output is a file


def retrain_started(home: Path, name: str) -> bool:
    """The retrain's run (named after the model; trials' are ``NAME-trial``) exists."""
    db = home / "kaon.db"
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=1)) as conn:
            return conn.execute("select count(*) from runs where name = ?",
                                (name,)).fetchone()[0] > 0
    except sqlite3.OperationalError:  # not migrated yet, or locked for a moment
        return False


def run_side(tree: Path, args: argparse.Namespace, label: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"kaon-bench-deadline-{label}-"))
    name = f"{args.data}-deadline"
    env = {**os.environ, "KAON_HOME": str(home), "PYTHONPATH": str(tree)}
    env.setdefault("KAON_DATA_PATH", str(REPO.parent / "shared" / "datasets"))
    cmd = [sys.executable, "-c", "from kaon.cli.main import main; main()", "tune",
           "--data", args.data, "--time", args.time, "--seed", str(args.seed),
           "--name", name, "--json"]
    hogs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    hog_at = None
    try:
        while proc.poll() is None:
            if hog_at is None and retrain_started(home, name):
                hog_at = time.monotonic() - started
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        for _ in range(args.hogs)]
            time.sleep(0.2)
        wall = time.monotonic() - started
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        if proc.poll() is None:
            proc.kill()
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{label}: kaon tune failed ({proc.returncode}):\n"
                         f"{err.decode()[-2000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    best: dict[str, Any] = {}
    best_file = result.get("report", {}).get("best")
    if best_file and Path(best_file).exists():
        best = json.loads(Path(best_file).read_text())
    row = {"side": label, "wall": wall, "hogs_at": hog_at,
           "epochs": best.get("retrain_epochs"),
           "planned": best.get("retrain_planned_epochs", best.get("retrain_epochs")),
           "retrain_s": best.get("retrain_seconds"),
           "test_acc": (result.get("test") or {}).get("accuracy")}
    console.print(f"{label}: {row}", highlight=False)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="breastmnist")
    parser.add_argument("--time", default="3m")
    parser.add_argument("--hogs", type=int, default=2,
                        help="busy processes started when the retrain starts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", default=BEFORE_DEADLINE,
                        help="the commit to compare against")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from kaon.tune.budget import parse_duration

    budget = parse_duration(args.time)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kaon-bench-deadline-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base_tree),
                        args.base], check=True, capture_output=True)
        try:
            rows.append(run_side(base_tree, args, f"base {args.base}"))
            rows.append(run_side(REPO, args, "working tree"))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(base_tree)], capture_output=True)
    table = Table(title=f"kaon tune --data {args.data} --time {args.time} --seed {args.seed}, "
                        f"{args.hogs} busy processes from the retrain's start")
    for col in ("side", "hogs from (s)", "retrain epochs (trained / planned)", "retrain s",
                "wall s", "wall / budget", "test acc"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["side"], f"{r['hogs_at']:.0f}" if r["hogs_at"] else "never",
                      f"{r['epochs']} / {r['planned']}",
                      "" if r["retrain_s"] is None else f"{r['retrain_s']}",
                      f"{r['wall']:.0f}", f"{r['wall'] / budget:.3f}",
                      f"{r['test_acc']:.4f}" if r["test_acc"] is not None else "")
    console.print(table)


if __name__ == "__main__":
    main()
