"""The validation table behind a method's chosen defaults: records of one method and cell grouped by the
values they used, scored on the **val** split only (test is never read here).

    python scripts/val_table.py leaderboards/records.jsonl --method ptm --dataset retinamnist --ipc 2 \
        [--by beta2] [--where end_epoch=6]
    python scripts/val_table.py STORE --method mtt --dataset retinamnist --ipc 10 \
        --by budget_version lr_teacher --seeds 0 1

Each row: the values the runs used of the ``--by`` hyperparameters (without ``--by``: of each run's
overrides), val balanced accuracy and val accuracy as mean +- std over every evaluation network of every
seed, the number of seeds and networks, and how many seeds diverged in distillation (failures: a value whose
runs diverge is no choice however well its other seeds score). Runs stopped by a time budget (``--time-budget``)
form rows of their own, marked "[time budget]": their iteration count is the machine's, not a value. Rows are sorted by val balanced accuracy (the
metric to choose on where one class dominates the split), best first, the rows that lost seeds after the
rest; the first row is the choice.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mddbench.api.budgets import record_budget_version  # noqa: E402
from mddbench.report import publish  # noqa: E402
from mddbench.results.failures import failures_of, lost  # noqa: E402
from mddbench.results.store import ResultStore  # noqa: E402


def used(record: dict, key: str) -> object:
    """The value a run used: its resolved hyperparameter (a default that later changed stays what it was),
    else a field of the record itself (``budget_version``: the budget definition it ran under)."""
    hparams, overrides = record.get("hparams") or {}, record.get("overrides") or {}
    if key in hparams:
        return hparams[key]
    if key in overrides:
        return overrides[key]
    if key == "budget_version":
        return record_budget_version(record)
    return record.get(key, "default")


def same(value: object, wanted: str) -> bool:
    """``--where`` equality: 10, 10.0 and "10" are one value."""
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == wanted


def rows(records: list[dict], by: list[str] | None = None,
         where: dict[str, str] | None = None, failures: list[dict] = ()) -> list[tuple[str, dict]]:
    """Records grouped by the values they used; ``failures`` (failures of the same cell, which hold the
    hyperparameters their runs resolved) join their group and count as its diverged seeds."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in [*records, *failures]:
        if not all(same(used(r, k), v) for k, v in (where or {}).items()):
            continue
        keys = by or sorted(r.get("overrides") or {})
        label = ", ".join(f"{k}={used(r, k)}" for k in keys) or "defaults"
        # a run stopped by a clock ran as many iterations as its machine allowed: never pooled with the runs
        # of an iteration budget, whatever --by says
        groups[label + (" [time budget]" if r.get("time_budget") else "")].append(r)
    out = []
    for label, group in groups.items():
        recs = [r for r in group if "metrics" in r]
        stats = {}
        for metric in ("val_balanced_acc", "val_acc"):
            values = [v for r in recs for v in (r["metrics"].get(metric) or {}).get("per_model", []) if v is not None]
            stats[metric] = (100 * np.mean(values), 100 * np.std(values)) if values else (float("nan"), float("nan"))
        stats["seeds"] = len({r["seed"] for r in recs})
        stats["networks"] = sum(r["metrics"]["val_acc"]["n"] for r in recs)
        stats["diverged"] = len({r["seed"] for r in group if "metrics" not in r})
        out.append((label, stats))
    # a group that lost seeds sorts after every group that did not: its mean is over its survivors only
    return sorted(out, key=lambda x: (x[1]["diverged"] > 0, -np.nan_to_num(x[1]["val_balanced_acc"][0], nan=-1)))


def read_records(path: str) -> list[dict]:
    """A store (results.sqlite or its folder) or a records.jsonl export such as leaderboards/records.jsonl."""
    return publish.read_records(path) if str(path).endswith(".jsonl") else ResultStore(path, create=False).records()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="a results.sqlite, the --out folder holding it, or a records.jsonl "
                                  "(leaderboards/records.jsonl: the published records)")
    ap.add_argument("--method", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--ipc", type=int, required=True)
    ap.add_argument("--by", nargs="+", help="the hyperparameters to group by, at the values the runs used "
                                            "(default: every override)")
    ap.add_argument("--seeds", nargs="+", type=int, help="only these seeds (a choice made before more seeds ran)")
    ap.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                    help="only runs that used these values (e.g. beta2=10.0)")
    args = ap.parse_args(argv)
    where = dict(w.split("=", 1) for w in args.where if "=" in w)
    if len(where) != len(args.where):
        ap.error("--where takes KEY=VALUE pairs")
    every = read_records(args.store)
    mine = lambda r: (r["method"] == args.method and r["dataset"] == args.dataset and r["ipc"] == args.ipc  # noqa: E731
                      and (args.seeds is None or r["seed"] in args.seeds))
    records = [r for r in every if mine(r)]
    failed = [f for f in lost(failures_of(args.store), every) if f["eval_model"] == "convnet" and mine(f)]
    if not records:
        print(f"no {args.method} records for {args.dataset} ipc {args.ipc} in {args.store}", file=sys.stderr)
        return 1
    print(f"| {', '.join(args.by) if args.by else 'overrides'} | val balanced acc | val acc | seeds | networks "
          "| diverged seeds |")
    print("|---|---|---|---|---|---|")
    for label, s in rows(records, args.by, where, failed):
        print(f"| {label} | {s['val_balanced_acc'][0]:.2f} ± {s['val_balanced_acc'][1]:.2f} | "
              f"{s['val_acc'][0]:.2f} ± {s['val_acc'][1]:.2f} | {s['seeds']} | {s['networks']} | {s['diverged']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
