"""Welch's t between every two rows of one leaderboard column, Holm-corrected: the p-values prose cites.

    python scripts/compare_rows.py leaderboards/records.jsonl --dataset retinamnist --ipc 10 --budget quick_v4
    python scripts/compare_rows.py STORE --dataset retinamnist --ipc 2 --budget quick_v3 --metric balanced_acc

For each metric (default: accuracy and balanced accuracy), every row of the column (the methods' default
runs, their variants and time-matched runs as their own rows, and ``real``), best mean first: the mean over
every evaluation network, the number of seeds, each seed's mean, and the two-sided p of Welch's t over seed
means against each other row, Holm-corrected over every pair of the column (``mddbench.report.leaderboard.pairwise_table``), and ``lost``: how many of the row's
seeds diverged in distillation (their failures are in the store, or in the failures.jsonl beside a records.jsonl),
so that its mean is over the others only. Test-split numbers: for reporting,
never for choosing a value (``scripts/val_table.py`` is the one for that).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from val_table import read_records  # noqa: E402

from mddbench.errors import ConfigError  # noqa: E402
from mddbench.report import leaderboard  # noqa: E402
from mddbench.report.leaderboard import METRIC_LABELS  # noqa: E402
from mddbench.results.failures import failures_of, lost  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="a results.sqlite, the --out folder holding it, or a records.jsonl")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--ipc", required=True, type=int)
    ap.add_argument("--budget", help="the budget with its version as the tables name it (quick_v4); "
                                     "needed when the records hold several")
    ap.add_argument("--eval-model", default="convnet")
    ap.add_argument("--metric", nargs="+", default=["test_acc", "balanced_acc"], choices=sorted(METRIC_LABELS))
    args = ap.parse_args(argv)
    records = read_records(args.store)
    failed = lost(failures_of(args.store), records)
    for metric in args.metric:
        try:
            table = leaderboard.pairwise_table(records, args.dataset, args.ipc, metric, args.eval_model, args.budget,
                                               lost=failed)
        except ConfigError as e:  # an empty column, or records of several budgets without --budget
            print(f"compare_rows: {e}", file=sys.stderr)
            return 2
        print(f"\n{METRIC_LABELS[metric]} (%), {args.dataset} ipc {args.ipc}, {args.eval_model}"
              f"{', ' + args.budget if args.budget else ''} (p: Welch over seed means, Holm-corrected over every "
              "pair of the column):\n")
        print(table.to_markdown(floatfmt="g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
