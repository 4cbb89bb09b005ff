"""The privacy leaderboard, rendered from privacy results (``privacy.jsonl``), never by hand.

One row per (dataset, ipc, method): each figure is the mean ± std (numpy, ddof=0) over the seeds'
results, in percent, with n the number of seeds. A result's loss-attack figure is the mean over the
networks it attacked. A figure that only some of a row's results hold (the standardized pixel space
arrived after the first audits; an attack that gave no number) is pooled over those and says how
many: ``(1 of 3 seeds)``. The `real` row is the reference attack on the network trained on the whole
train split (one per dataset and seed, shared by every set of that seed). A row whose method selects real
train images (``Method.selects_real``: `random`, `herding`, `kcenter`) says beside its near-copy figures
that they are 100 % by construction: the set *is* patients' images, whatever the audit measured.
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Sequence

import numpy as np
import pandas as pd

from mddbench.api.budgets import budget_label
from mddbench.privacy.memorisation import SPACE_LABELS
from mddbench.report.cells import format_pm
from mddbench.report.keys import REAL, col_order, row_key, row_label, row_order, selects_real
from mddbench.report.markdown import to_markdown
from mddbench.report.table import Table
from mddbench.results.verification import MARK

Record = dict[str, Any]


def _space(space: str, figure: str) -> Callable[[Record], float | None]:
    """A near-copy figure; only the standardized pixel space may be missing (audits made before it existed)."""
    if space == "pixel_standardized":
        return lambda r: r["memorisation"].get(space, {}).get(figure)
    return lambda r: r["memorisation"][space][figure]


_STD = SPACE_LABELS["pixel_standardized"]
COLUMNS: dict[str, Callable[[Record], float | None]] = {
    f"near copies, {SPACE_LABELS['pixel']}": _space("pixel", "near_copy_share"),
    f"near copies, {SPACE_LABELS['embedding']}": _space("embedding", "near_copy_share"),
    f"distance ratio, {SPACE_LABELS['pixel']}": _space("pixel", "distance_ratio"),
    f"near copies, {_STD}": _space("pixel_standardized", "near_copy_share"),
    f"distance ratio, {_STD}": _space("pixel_standardized", "distance_ratio"),
    "loss attack AUC": lambda r: r["membership"]["target"]["auc"]["mean"],
    "loss TPR@1% FPR": lambda r: r["membership"]["target"]["tpr_at_1pct_fpr"]["mean"],
    "loss TPR@0.1% FPR": lambda r: r["membership"]["target"]["tpr_at_0.1pct_fpr"]["mean"],
    "set-distance TPR@1% FPR": lambda r: r["membership"]["set_distance"]["tpr_at_1pct_fpr"],
    "set-distance TPR@0.1% FPR": lambda r: r["membership"]["set_distance"]["tpr_at_0.1pct_fpr"],
    "attacked nets' test acc": lambda r: r["membership"]["target"]["test_acc"]["mean"],
}
NEAR_COPY_COLUMNS = [name for name in COLUMNS if name.startswith("near copies")]
BY_CONSTRUCTION = "(by construction)"  # beside a selects_real row's near-copy figures (a note says why)
REFERENCE_COLUMNS = {"loss attack AUC": "auc", "loss TPR@1% FPR": "tpr_at_1pct_fpr",
                     "loss TPR@0.1% FPR": "tpr_at_0.1pct_fpr", "attacked nets' test acc": "test_acc"}


def _stat(values: Sequence[float | None]) -> str:
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float) * 100
    if not arr.size:
        return "-"
    partial = f" ({arr.size} of {len(values)} seeds)" if arr.size < len(values) else ""
    return format_pm(float(arr.mean()), float(arr.std())) + partial


def _reference_rows(records: list[Record]) -> dict[tuple[str, str], list[Record]]:
    """The reference networks' results per dataset and eval model, each (seed, recipe) once."""
    seen: dict[tuple[str, str], dict[str, Record]] = defaultdict(dict)
    for r in records:
        key = json.dumps([r["seed"], r["config"]["reference"], r["data_checksum"]], sort_keys=True)
        seen[(r["dataset"], r["eval_model"])].setdefault(key, r)
    return {k: list(v.values()) for k, v in seen.items()}


def privacy_table(records: Iterable[Record], unverified: Collection[str] = ()) -> pd.DataFrame:
    """Rows (dataset, ipc, eval model, method) with every privacy figure; `real` rows last per dataset.
    ``unverified``: ids of evaluation records not trusted here; a row whose audits link to one is marked."""
    records = list(records)
    cells: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        cells[((r["dataset"], r["ipc"], r["eval_model"]), row_key(r))].append(r)
    rows = []
    for (col, row), recs in cells.items():
        cells = {name: _stat([get(r) for r in recs]) for name, get in COLUMNS.items()}
        if selects_real(row[0]):
            cells.update({name: f"{cells[name]} {BY_CONSTRUCTION}" for name in NEAR_COPY_COLUMNS
                          if cells[name] != "-"})
        rows.append(((col_order(col), row_order(row)), {
            "dataset": col[0], "ipc": col[1], "eval_model": col[2],
            "method": row_label(row) + (f" {MARK}" if any(r.get("eval_record_id") in unverified for r in recs) else ""),
            "seeds": len(recs), **cells}))
    for (dataset, eval_model), recs in _reference_rows(records).items():
        ref = {name: _stat([r["membership"]["reference"][key]["mean"] for r in recs])
               for name, key in REFERENCE_COLUMNS.items()}
        col = (dataset, "full", eval_model)
        rows.append(((col_order(col), row_order((REAL, "hard", ""))), {
            "dataset": dataset, "ipc": "full", "eval_model": eval_model, "method": f"{REAL} (reference)",
            "seeds": len(recs), **{name: ref.get(name, "-") for name in COLUMNS}}))
    columns = ["dataset", "ipc", "eval_model", "method", "seeds", *COLUMNS]
    return pd.DataFrame([row for _, row in sorted(rows, key=lambda kv: kv[0])], columns=columns, dtype=object)


NOTES = [
    "Near copies: share of synthetic images closer (RMS distance) to a real training image than the 5th "
    "percentile of held-out (val + test) real images' distances to their nearest training image; fresh real "
    "patients score about 5 % by construction. Pixel space after the dataset's normalisation, and the "
    "embedding of the `real` network. Distance ratio: median synthetic over median held-out distance "
    "(0: copies, about 100: fresh patients), robust where near-duplicates across splits make the 5th "
    "percentile tiny. Standardized pixel: every channel of every image z-scored over its own pixels "
    "first, so a patient's image at another brightness or contrast still counts as a copy, and a set whose "
    "values leave the data's range gets distances that mean something; audits made before it was added "
    "show `-` there.",
    "Loss attack: minus the cross-entropy under the networks the protocol trains on the set, members = the "
    "train split, non-members = the test split; AUC and true-positive rate at 1 % and 0.1 % false positives "
    "(Carlini et al. 2022: judge by TPR at low FPR). With fewer than 1000 (100) test images, TPR at 0.1 % (1 %) "
    "FPR allows no false positive at all. No likelihood-ratio (shadow model) attack was run.",
    "Set-distance attack: a patient is guessed a member when their image lies close to a synthetic image "
    "(whoever holds the set can run it). `real (reference)`: the loss attack on the network trained on the "
    "whole train split, the leak of sharing a model trained on patients.",
    "Cells: mean ± std (numpy, ddof=0) in percent over seeds; seeds = number of privacy results; a cell "
    "that only some of them hold says so: (1 of 3 seeds).",
]


def notes(records: Iterable[Record]) -> list[str]:
    """:data:`NOTES`, and which rows are real images by construction when the table holds any."""
    real = sorted({r["method"] for r in records if selects_real(r["method"])})
    if not real:
        return NOTES
    return NOTES + [f"{', '.join(f'`{m}`' for m in real)}: the set is real train images that the method selects "
                    f"(`Method.selects_real`), so its near-copy share is 100 % by construction; its near-copy cells "
                    f"show the audit's figure with {BY_CONSTRUCTION} beside it. Sharing such a set shares patients' "
                    "images."]


def privacy_tables(records: Iterable[Record], unverified: Collection[str] = ()) -> list[Table]:
    """One table per (privacy version, budget and its version, as the accuracy tables label it: ``quick_v3``);
    never pooled across them. ``unverified``: ids of evaluation records not trusted here (their rows are marked)."""
    records = list(records)
    scopes = sorted({(r["privacy_version"], budget_label(r)) for r in records})
    several = len({v for v, _ in scopes}) > 1
    tables = []
    for version, budget in scopes:
        recs = [r for r in records if (r["privacy_version"], budget_label(r)) == (version, budget)]
        df = privacy_table(recs, unverified)
        marked = sorted({r["eval_record_id"] for r in recs if r.get("eval_record_id") in unverified})
        legend = [f"{MARK}: the row's audits are of sets whose evaluation records were merged from another store "
                  f"and are not verified here (`mddbench verify`): {', '.join(marked)}."] if marked else []
        scope = f"{version}_{budget}" if several else budget
        tables.append(Table(f"privacy_{scope}", f"Privacy audit ({version}, budget `{budget}`)",
                            (*notes(recs), *legend), tuple(recs), (), lambda kind, df=df: df, scope))
    return tables


def write_privacy_leaderboard(records: Iterable[Record], out_dir: str | os.PathLike[str],
                              unverified: Collection[str] = ()) -> list[Path]:
    """``privacy_<budget>.csv`` and ``.md`` per table of :func:`privacy_tables`."""
    out = Path(out_dir)
    paths = []
    for table in privacy_tables(records, unverified):
        df = table.frame("csv")
        for path, text in ((out / f"{table.stem}.csv", df.to_csv(lineterminator="\n", index=False)),
                           (out / f"{table.stem}.md", to_markdown(df, table.title, table.notes, table.records))):
            path.write_text(text, encoding="utf-8", newline="\n")
            paths.append(path)
    return paths
