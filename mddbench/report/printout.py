"""The table ``mddbench run`` and ``eval`` print after a job: every number in %, with a legend and warnings.

Issue 46: the progress bar said 0.338 and the table 33.80, ``n`` and ``distill s`` were unexplained, and
nothing said that an accuracy at the majority class's share of the test split means nothing, that a
budget without parity (``smoke``: each method's own small iteration counts, see
:mod:`mddbench.api.budgets`) is not comparable, or that a rerun reprinted stored records without
running anything. A budget is "not comparable" by what it declares (``share`` is None), not by name.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from mddbench.api.budgets import BUDGETS

NOT_COMPARABLE = "*"  # beside the budget of a row whose numbers are not comparable
HEADER = ["method", "dataset", "ipc", "model", "budget", "test acc %", "bal acc %", "AUC %", "n", "diverged",
          "distill s"]
LEGEND = ("test acc %: test accuracy in percent, mean ± std over the n evaluation networks trained on the set\n"
          "bal acc %: balanced accuracy (mean per-class recall); AUC %: area under the ROC curve; means, in percent\n"
          "n: evaluation networks scored; diverged: networks whose training diverged (not among the n)\n"
          "distill s: seconds the distillation took (expert training not counted)")


def pct(v: float | None) -> str:
    """A fraction as a percentage with two decimals ("-": no value)."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def comparable(budget_label: str) -> bool:
    """Whether results at this budget (as recorded: ``smoke-custom`` is ``smoke``) may be compared across
    methods: only a budget that gives every method the same share of its official work (``share``)."""
    name = str(budget_label).removesuffix("-custom")
    return name in BUDGETS and BUDGETS.get(name).share is not None


def record_rows(records: Iterable[dict[str, Any]]) -> list[tuple]:
    rows = []
    for r in records:
        m = r["metrics"]
        acc = f"{pct(m['test_acc']['mean'])} ± {pct(m['test_acc']['std'])}" if m["test_acc"]["n"] else "diverged"
        seconds = r.get("distill_seconds")
        rows.append((r["method"], r["dataset"], r["ipc"], r["eval_model"],
                     r["budget"] + ("" if comparable(r["budget"]) else NOT_COMPARABLE), acc,
                     pct(m["balanced_acc"]["mean"]), pct(m["auc"]["mean"]), m["test_acc"]["n"],
                     m["test_acc"].get("diverged", 0), "-" if seconds is None else f"{seconds:.1f}"))
    return rows


def majority_warnings(records: Iterable[dict[str, Any]],
                      counts_of: Callable[[str], tuple[int, ...] | None]) -> list[str]:
    """A warning per record whose mean test accuracy is at or below the share of the test split's largest class
    (what predicting that class alone scores); ``counts_of(dataset)``: the test split's class counts or None."""
    out = []
    for r in records:
        acc = r["metrics"]["test_acc"]["mean"] if r["metrics"]["test_acc"]["n"] else None
        counts = counts_of(r["dataset"])
        if acc is None or (isinstance(acc, float) and math.isnan(acc)) or not counts or not sum(counts):
            continue
        share = max(counts) / sum(counts)
        if acc <= share + 1e-12:
            out.append(f"warning: {r['method']} on {r['dataset']} ipc {r['ipc']} ({r['eval_model']}): test accuracy "
                       f"{pct(acc)} % is at or below the majority-class rate of the test split\n  ({pct(share)} %, "
                       f"{max(counts)} of {sum(counts)} images): predicting that class alone scores as much; "
                       f"read the balanced accuracy ({pct(r['metrics']['balanced_acc']['mean'])} %)")
    return out


def printout(records: list[dict[str, Any]], counts_of: Callable[[str], tuple[int, ...] | None],
             already_done: bool = False) -> str:
    """The table of ``records`` with its legend, the not-comparable mark, majority-class warnings, and a note
    when they were all stored before this command (nothing ran)."""
    from tabulate import tabulate

    lines = [tabulate(record_rows(records), headers=HEADER, tablefmt="simple", disable_numparse=True), "", LEGEND]
    off = sorted({r["budget"] for r in records if not comparable(r["budget"])})
    if off:
        lines.append(f"{NOT_COMPARABLE} {', '.join(off)}: not comparable. A budget to check that things run: its "
                     f"iterations are each method's own small numbers,\n  not an equal share of each method's "
                     f"official work (compare methods at {', '.join(b for b in BUDGETS if comparable(b))})")
    lines += majority_warnings(records, counts_of)
    if already_done and records:
        lines.append("already done: an earlier run of this job stored these records; nothing was distilled or "
                     "evaluated again\n  (another --seed or --out runs it afresh)")
    return "\n".join(lines)
