"""A/B of Kaon's serving path: the working tree against an earlier commit, in the same run.

    python bench/serve_ab.py --base REV [--model mnist-cnn] [--concurrency 16,64]
                             [--rounds 5] [--window 4]

Both versions serve the same registered model (random weights) with ``kaon serve`` (one
process each, the same batching); the base runs from a ``git worktree`` of REV on this
machine's installed dependencies. ``wrk`` alternates windows between the two, so this VM's
drift hits both alike; each cell is the median over the rounds, and the last column is the
median of the per-round ratios. Needs ``apt-get install wrk``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from gateway_overhead import rounds  # noqa: E402
from serve_compare import start, stop, wrk_script  # noqa: E402

console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "resnet18"])
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kaon-ab-") as tmp:
        work = Path(tmp)
        base_tree = work / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base_tree),
                        args.base], check=True, capture_output=True)
        try:
            servers = {}
            for name, tree, port in (("base", base_tree, 8791), ("tree", REPO, 8792)):
                # `python -m` puts the working directory first on sys.path: run each from its
                # tree, with a home of its own registered by its own code (their schemas may
                # differ: a base from before a migration cannot open the tree's database)
                tree_env = {**os.environ, "KAON_HOME": str(work / f"home-{name}"),
                            "PYTHONPATH": str(tree)}
                where = subprocess.run([sys.executable, "-c", "import kaon; print(kaon.__file__)"],
                                       cwd=tree, env=tree_env, capture_output=True, text=True,
                                       check=True).stdout.strip()
                if not where.startswith(str(tree)):
                    raise SystemExit(f"{name} would import kaon from {where}, not {tree}")
                console.print(f"{name}: kaon from {where}")
                subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'bench'); "
                                "from serve_compare import register_models; "
                                f"register_models([{args.model!r}])"],
                               cwd=tree, env=tree_env, check=True)
                servers[name] = start("kaon", f"{args.model}:1", port, args.batch, args.wait_ms,
                                      tree_env, cwd=tree)
            body = {"inputs": [[[0] * 28] * 28]}
            script = wrk_script(work / "body.json", body)
            table = Table(title=f"{args.model}: working tree vs {args.base} (medians of "
                                f"{args.rounds} alternating {args.window:.0f} s windows)")
            for col in ("concurrency", "base req/s", "base p50 / p99 ms", "tree req/s",
                        "tree p50 / p99 ms", "tree ÷ base (per-round median)"):
                table.add_column(col, justify="right")
            for c in (int(x) for x in args.concurrency.split(",")):
                got = rounds({n: (url, script) for n, (_, url, _) in servers.items()}, c,
                             args.window, args.rounds)
                med = {n: {k: statistics.median(w[k] for w in ws) for k in ("rps", "p50", "p99")}
                       for n, ws in got.items()}
                ratio = statistics.median(t["rps"] / b["rps"]
                                          for b, t in zip(got["base"], got["tree"], strict=True))
                table.add_row(str(c), f"{med['base']['rps']:,.0f}",
                              f"{med['base']['p50']:.1f} / {med['base']['p99']:.1f}",
                              f"{med['tree']['rps']:,.0f}",
                              f"{med['tree']['p50']:.1f} / {med['tree']['p99']:.1f}",
                              f"{ratio:.3f}")
            console.print(table)
        finally:
            for proc, _, _ in locals().get("servers", {}).values():
                stop(proc)
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(base_tree)], capture_output=True)


if __name__ == "__main__":
    main()
