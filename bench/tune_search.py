"""``kaon tune`` (TPE + Hyperband) vs plain Optuna random search, same space, budget and workers.

    python bench/tune_search.py --data breastmnist --time 5m [--objective accuracy] [--space F]
                                [--seed 0]

Both sides run through the same trial machinery (a subprocess per trial, the final retrain on
train + validation, the test evaluation); only the search differs: Kaon's warm start, TPE and
Hyperband against plain random search without pruning. Both score trials the same way (on
small validation splits: cross-validated, on perturbed images, docs/tune.md). Each side
gets the full budget, one after the other, in the same run. Prints a table with test accuracy,
test ROC AUC (binary tasks), the trial counts and the wall time against the budget. A side
on which no trial finished (so no model) is a row saying so, not a crash of the run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--time", default="5m")
    parser.add_argument("--objective", default="accuracy", choices=["accuracy", "auc"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--space", type=Path, default=None,
                        help="a search-space YAML file, used by both sides")
    parser.add_argument("--seed", type=int, default=0,
                        help="both searches' seed: the sampler's, every trial's and the retrain's")
    args = parser.parse_args()
    os.environ["KAON_HOME"] = tempfile.mkdtemp(prefix="kaon-bench-tune-")
    os.environ.setdefault("KAON_DATA_PATH", str(REPO.parent / "shared" / "datasets"))

    from kaon.errors import KaonError
    from kaon.tune import TuneConfig, TuneResult, tune
    from kaon.tune.budget import parse_duration
    from kaon.tune.space import load_space

    budget = parse_duration(args.time)
    rows = []
    for label, sampler, kaon in (("kaon tune (warm start, TPE + Hyperband)", "tpe", True),
                                 ("Optuna random search", "random", False)):
        cfg = TuneConfig(dataset=args.data, time_seconds=budget, objective=args.objective,
                         workers=args.workers, sampler=sampler, pruning=kaon,
                         warm_start=kaon, space=load_space(args.space), seed=args.seed,
                         model_name=f"{args.data}-{sampler}")
        started = time.monotonic()
        try:
            result: TuneResult | str = tune(cfg, progress=False)
        except KaonError as exc:  # e.g. no trial finished: that side found no model
            result = f"no model: {exc.message}"
            print(f"{label}: {result} ({time.monotonic() - started:.0f}s)", flush=True)
        else:
            print(f"{label}: {result.to_dict()}", flush=True)
        rows.append((label, result, time.monotonic() - started))

    print(f"\n{args.data}, budget {args.time} ({budget:.0f}s), objective {args.objective}, "
          f"{args.workers} workers, space {args.space or 'default'}, seed {args.seed}")
    print("| search | trials (complete/pruned/timeout/failed) | best val | test acc | test AUC "
          "| wall s | wall / budget |")
    print("|---|---|---|---|---|---|---|")
    for label, r, wall in rows:
        if isinstance(r, str):
            print(f"| {label} | {r} | | | | {wall:.0f} | {wall / budget:.3f} |")
            continue
        t = r.trials
        auc = r.test_metrics.get("roc_auc")
        print(f"| {label} | {t['complete']}/{t['pruned']}/{t['timeout']}/{t['failed']} | "
              f"{r.best_value:.4f} | {r.test_metrics['accuracy']:.4f} | "
              f"{'' if auc is None else f'{auc:.4f}'} | {r.seconds:.0f} | "
              f"{r.seconds / budget:.3f} |")


if __name__ == "__main__":
    main()
