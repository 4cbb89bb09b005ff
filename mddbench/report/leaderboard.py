"""Leaderboards rendered from result records (never typed by hand).

A cell pools the per-model values of every record (every seed) that falls into it: mean and
numpy std (ddof=0) over the pooled values, in points (x100), with n the number of pooled values; its
95 % confidence interval and the column's verdict (bold or tie) come from the seed means
(:mod:`mddbench.report.significance`).
The ``real`` row (ipc "full") has no ipc of its own: it is repeated in every column of its dataset
(and eval model), or gets a "<dataset> full" column when nothing else ran on that dataset.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from mddbench.api.budgets import budget_label, record_budget_version
from mddbench.atomic import write_text
from mddbench.data.class_balance import majority_dominated, majority_share
from mddbench.errors import ConfigError
from mddbench.report.cells import TIE, Cell, Record, cell_stat, format_cell, format_pm, pool
from mddbench.report.keys import (
    ColKey,
    RowKey,
    col_key,
    col_order,
    ipc_label,
    is_reference,
    record_order,
    row_key,
    row_key_any_time,
    row_label,
    row_order,
    time_budgets,
    variant,
)
from mddbench.report.markdown import to_markdown
from mddbench.report.privacy_leaderboard import write_privacy_leaderboard
from mddbench.report.significance import ALPHA, LEVEL, MIN_SEEDS, holm, verdict, welch_p
from mddbench.report.table import Table
from mddbench.results.store import METRIC_NAMES
from mddbench.results.verification import MARK, legend, state, trusted, untrusted

PAPER_RESULTS = Path(__file__).parents[1] / "paper_results.csv"
METRIC_LABELS = {"test_acc": "test accuracy", "val_acc": "validation accuracy",
                 "auc": "macro AUC", "balanced_acc": "balanced accuracy"}


# --- ordering -------------------------------------------------------------------------------


# --- selection ------------------------------------------------------------------------------

def _scope(records: Iterable[Record], metric: str, budget: str | None, protocol: str | None) -> list[Record]:
    """Records of one budget (with its version: ``quick`` is version 1, ``quick_v2`` version 2) and protocol;
    None means "the only one present"."""
    if metric not in METRIC_NAMES:
        raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRIC_NAMES)}")
    records = list(records)
    for field, value, of in (("budget", budget, budget_label), ("protocol", protocol, lambda r: r["protocol"])):
        if value is None:
            present = sorted({of(r) for r in records})
            if len(present) > 1:
                how = "(--budget on the command line, budget= in Python)" if field == "budget" else f"with {field}="
                raise ConfigError(f"records span several {field}s ({', '.join(present)}); choose one {how}")
        else:
            records = [r for r in records if of(r) == value]
    return records


# --- tables ---------------------------------------------------------------------------------

def _cells(records: list[Record], row_of: Callable[[Record], RowKey] = row_key
           ) -> tuple[list[ColKey], dict[tuple[RowKey, ColKey], list[Record]]]:
    """The columns, in order, and each cell's records; a ``full`` record (``real``) joins every column of
    its dataset and evaluation network, or makes its own where it has none."""
    cols = {col_key(r) for r in records if r["ipc"] != "full"}
    spread = {(d, em) for d, _, em in cols}
    cols |= {col_key(r) for r in records if r["ipc"] == "full" and (r["dataset"], r["eval_model"]) not in spread}
    cols = sorted(cols, key=col_order)
    cells: dict[tuple[RowKey, ColKey], list[Record]] = defaultdict(list)
    for r in records:
        d, ipc, em = col_key(r)
        targets = [c for c in cols if c[0] == d and c[2] == em] if ipc == "full" else [(d, ipc, em)]
        for c in targets:
            cells[(row_of(r), c)].append(r)
    return cols, cells


def unverified_mark(cell: Sequence[Record]) -> str:
    """`` †`` on a cell that rests on a record not trusted here (:mod:`mddbench.results.verification`)."""
    return f" {MARK}" if any("metrics" in r and not trusted(r) for r in cell) else ""


def _pivot(records: list[Record], metric: str, col_label: Callable[[ColKey], str], bold: bool,
           row_of: Callable[[Record], RowKey] = row_key,
           note_of: Callable[[list[Record]], str] = lambda recs: "", lost: Sequence[Record] = (),
           as_cells: bool = False) -> pd.DataFrame:
    """Rows = (method, label type, variant), columns = (dataset, ipc, eval model); ipc "full" spreads.

    ``note_of`` appends to a cell what its records share beyond the row (the variants table: time budgets).
    ``bold`` renders for markdown: intervals, and the column's verdict (bold, or ``≈`` on tied cells).
    ``lost``: failures (:func:`mddbench.results.failures.lost`) of the same scope; each cell says how many of its
    seeds they took, and a row or column only they hold appears too.
    ``as_cells``: each cell a :class:`~mddbench.report.cells.Cell` (stat, verdict, records) instead of its text.
    """
    cols, cells = _cells([*records, *lost], row_of)
    stats = {k: cell_stat(v, metric) for k, v in cells.items()}
    # contenders for a column's verdict: never a reference row, nor a cell that lost models or seeds to divergence
    contenders = {k: s for k, s in stats.items()
                  if not is_reference(k[0][0]) and not s.diverged and not s.lost and s.n}
    verdicts = {c: verdict({row: round(s.mean, 2) for (row, col), s in contenders.items() if col == c},
                           {row: s.seeds for (row, col), s in contenders.items() if col == c}) for c in cols}
    rows = sorted({row_of(r) for r in [*records, *lost]}, key=row_order)
    def cell(row: RowKey, c: ColKey) -> Cell:
        held = cells.get((row, c), [])
        return Cell(stats.get((row, c)), verdicts[c].significant and verdicts[c].best == row, row in verdicts[c].tied,
                    tuple(held), note_of(held) + unverified_mark(held))

    data = [[cell(row, c) if as_cells else cell(row, c).text(bold) for c in cols] for row in rows]
    index = pd.Index([row_label(row) for row in rows], name="method")
    return pd.DataFrame(data, index=index, columns=[col_label(c) for c in cols], dtype=object)


def pairwise_table(records: Iterable[Record], dataset: str, ipc: Any, metric: str = "test_acc",
                   eval_model: str = "convnet", budget: str | None = None, protocol: str | None = None,
                   lost: Iterable[Record] = ()) -> pd.DataFrame:
    """Every row of one column (default runs and variants, ``real`` included) against every other: the
    row's mean and seed means, and Welch's two-sided p over seed means (``significance.welch_p``) with
    each other row, Holm-corrected over every pair of the column (``significance.holm``); rows by mean,
    best first. The numbers behind a table's marks, for sentences that
    compare two rows the marks do not (nan: a row with one seed cannot be tested). Rows as the variants
    table has them: time-matched runs of one method share a row whatever each seed's time budget.
    ``lost`` (failures, :func:`mddbench.results.failures.lost`): the "lost" column says how many of a row's runs
    diverged in distillation, so that its mean is over the others only; a row they took whole is left out."""
    records = [r for r in _scope(records, metric, budget, protocol)
               if r["eval_model"] == eval_model and r["dataset"] == dataset and r["ipc"] in (ipc, "full")]
    lost = [f for f in _lost_in_scope(lost, records)
            if f["eval_model"] == eval_model and f["dataset"] == dataset and f["ipc"] in (ipc, "full")]
    col = (dataset, ipc, eval_model)
    cells = _cells([*records, *lost], row_key_any_time)[1]
    stats = {row: cell_stat(recs, metric) for (row, c), recs in cells.items() if c == col}
    stats = {row: stat for row, stat in stats.items() if stat.records}
    if not stats:
        raise ConfigError(f"no {metric} records for {dataset} ipc {ipc} on {eval_model}")
    rows = sorted(stats, key=lambda row: (-stats[row].mean, row_order(row)))
    labels = [row_label(row) for row in rows]
    # one family per column: every pair of rows, Holm-corrected together (a row with one seed stays untested)
    adjusted = holm({frozenset((a, b)): welch_p(stats[a].seeds, stats[b].seeds)
                     for i, a in enumerate(rows) for b in rows[i + 1:]})
    data = [[round(stats[a].mean, 2), len(stats[a].seeds), stats[a].lost, " ".join(f"{x:.1f}" for x in stats[a].seeds)]
            + [math.nan if a == b else round(adjusted[frozenset((a, b))], 3) for b in rows]
            for a in rows]
    return pd.DataFrame(data, index=pd.Index(labels, name="method"),
                        columns=["mean", "seeds", "lost", "seed means"] + [f"p vs {x}" for x in labels])


def _lost_in_scope(lost: Iterable[Record], records: Sequence[Record], budget: str | None = None,
                   protocol: str | None = None) -> list[Record]:
    """The failures of the budgets and protocols ``records`` (already scoped) hold; with no records (a scope
    every job of which diverged), those of ``budget`` and ``protocol``, or of the one scope they all share."""
    if records:
        scopes = {(budget_label(r), r["protocol"]) for r in records}
        return [f for f in lost if (budget_label(f), f["protocol"]) in scopes]
    return _scope(lost, "test_acc", budget, protocol)


def main_table(records: Iterable[Record], metric: str = "test_acc", eval_model: str = "convnet",
               budget: str | None = None, protocol: str | None = None, bold: bool = False,
               balanced_beside: bool = False, lost: Iterable[Record] = (), as_cells: bool = False) -> pd.DataFrame:
    """The paper's layout: rows = methods, columns = "<dataset> ipc<k>", cells "mean ± std (n=N)".

    ``bold`` renders for markdown: the 95 % interval over seeds in each cell, the column's best in
    ``**...**`` where it is significantly best (``real`` excluded), ``≈`` on tied cells otherwise.
    ``balanced_beside``: after each column of a dataset whose test majority class exceeds half the test
    split, the same column in balanced accuracy ("... bal. acc").
    ``lost``: failures (:func:`mddbench.results.failures.lost`); the cells say which seeds they took.
    ``as_cells``: :class:`~mddbench.report.cells.Cell` objects instead of text (the web page's).
    """
    records = [r for r in _scope(records, metric, budget, protocol) if r["eval_model"] == eval_model]
    lost = [f for f in _lost_in_scope(lost, records, budget, protocol) if f["eval_model"] == eval_model]
    table = _pivot(records, metric, lambda c: f"{c[0]} {ipc_label(c[1])}", bold, lost=lost, as_cells=as_cells)
    if (not balanced_beside or metric == "balanced_acc"
            or not any(majority_dominated(r["dataset"]) for r in [*records, *lost])):
        return table
    balanced = _pivot(records, "balanced_acc", lambda c: f"{c[0]} {ipc_label(c[1])} bal. acc", bold, lost=lost,
                      as_cells=as_cells)
    columns = []
    for acc, bal in zip(table.columns, balanced.columns):
        columns.append(table[acc])
        if majority_dominated(acc.split(" ")[0]):
            columns.append(balanced[bal])
    return pd.concat(columns, axis=1)


def variants_table(records: Iterable[Record], metric: str = "test_acc", eval_model: str = "convnet",
                   budget: str | None = None, protocol: str | None = None, bold: bool = False,
                   lost: Iterable[Record] = (), as_cells: bool = False) -> pd.DataFrame:
    """Variant runs (ablations, time budgets) beside the default runs of the same methods, in the
    (dataset, ipc) cells where variants exist. A time-budgeted row names each cell's budget in the cell."""
    records = [r for r in _scope(records, metric, budget, protocol) if r["eval_model"] == eval_model]
    lost = [f for f in _lost_in_scope(lost, records, budget, protocol) if f["eval_model"] == eval_model]
    cells = {(r["dataset"], r["ipc"]) for r in [*records, *lost] if variant(r)}
    methods = {r["method"] for r in [*records, *lost] if variant(r)}
    shown = lambda r: (r["dataset"], r["ipc"]) in cells and (variant(r) or r["method"] in methods  # noqa: E731
                                                              or r["method"] == "random")
    return _pivot([r for r in records if shown(r)], metric, lambda c: f"{c[0]} {ipc_label(c[1])}", bold,
                  row_key_any_time, time_budgets, [f for f in lost if shown(f)], as_cells)


def cross_arch_table(records: Iterable[Record], ipc: int | None = 2, metric: str = "test_acc",
                     budget: str | None = None, protocol: str | None = None, bold: bool = False,
                     lost: Iterable[Record] = (), as_cells: bool = False) -> pd.DataFrame:
    """Rows = methods, columns = "<dataset> <eval model>" at one ipc (all ipcs, labelled, if None)."""
    records = _scope(records, metric, budget, protocol)
    lost = _lost_in_scope(lost, records, budget, protocol)
    if ipc is None:
        return _pivot(records, metric, lambda c: f"{c[0]} {ipc_label(c[1])} {c[2]}", bold, lost=lost,
                      as_cells=as_cells)
    datasets = {r["dataset"] for r in [*records, *lost] if r["ipc"] == ipc}
    shown = lambda r: r["dataset"] in datasets and r["ipc"] in (ipc, "full")  # noqa: E731
    return _pivot([r for r in records if shown(r)], metric, lambda c: f"{c[0]} {c[2]}", bold,
                  lost=[f for f in lost if shown(f)], as_cells=as_cells)


def reported_vs_reproduced(records: Iterable[Record], paper_csv: str | os.PathLike[str] = PAPER_RESULTS,
                           metric: str = "test_acc", lost: Iterable[Record] = ()) -> pd.DataFrame:
    """Every (dataset, ipc, method, eval model) the paper reports, beside ours, then what only we ran.

    Our records are grouped by budget, protocol and label type (one row each); the difference is
    ours minus the paper's mean, in points. ``lost`` (failures): ours says how many seeds diverged.
    """
    if metric not in METRIC_NAMES:
        raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRIC_NAMES)}")
    ours: dict[tuple[str, str, str, str], dict[tuple[str, str, str], list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in (r for r in [*records, *lost] if not variant(r)):  # ablations and time-matched runs are not the method
        ours[(r["dataset"], str(r["ipc"]), r["method"], r["eval_model"])][
            (budget_label(r), r["protocol"], r.get("label_type") or "hard")].append(r)

    def rows_for(table: str, key: tuple[str, str, str, str], reported: float | None, reported_std: float | None):
        dataset, ipc, method, eval_model = key
        base = {"table": table, "dataset": dataset, "ipc": ipc, "method": method, "eval_model": eval_model,
                "reported": "not reported" if reported is None else format_pm(reported, reported_std)}
        groups = ours.get(key, {})
        if not groups:
            return [{**base, "label_type": "", "reproduced": "not run", "difference": "", "budget": "", "protocol": ""}]
        out = []
        for (budget, protocol, label_type), recs in sorted(groups.items()):
            s = cell_stat(recs, metric)
            diff = "" if reported is None or not s.n else f"{s.mean - reported:+.2f}"
            out.append({**base, "label_type": label_type, "reproduced": format_cell(s) + unverified_mark(recs),
                        "difference": diff,
                        "budget": budget, "protocol": protocol})
        return out

    paper = pd.read_csv(paper_csv, dtype=str, keep_default_na=False)
    rows: list[dict[str, str]] = []
    seen = set()
    for p in paper.itertuples(index=False):
        key = (p.dataset, p.ipc, p.method, p.eval_model)
        seen.add(key)
        rows += rows_for(p.table, key, float(p.acc_mean), float(p.acc_std) * 100)
    extra = sorted((k for k in ours if k not in seen),
                   key=lambda k: (col_order((k[0], k[1] if k[1] == "full" else int(k[1]), k[3])),
                                  row_order((k[2], "", ""))))
    for key in extra:
        rows += rows_for("", key, None, None)
    columns = ["table", "dataset", "ipc", "method", "eval_model", "label_type", "reported", "reproduced",
               "difference", "budget", "protocol"]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def tidy(records: Iterable[Record]) -> pd.DataFrame:
    """One row per record; metric means/stds in points (recomputed from per-model values, ddof=0); where some
    record is not trusted here, a ``verification`` column says each one's state (local, verified, unverified, ...)."""
    records = list(records)
    rows = []
    for r in sorted(records, key=record_order):
        row = {k: r.get(k) for k in ("job_id", "method", "dataset", "resolution", "ipc", "eval_model", "budget",
                                     "protocol", "seed")}
        row["budget_version"] = r.get("budget_version", 1)
        row["label_type"] = r.get("label_type") or "hard"
        row["variant"] = variant(r)
        test = pool([r], "test_acc")
        row.update(test_acc_mean=round(test.mean, 4), test_acc_std=round(test.std, 4), test_acc_n=test.n,
                   diverged=test.diverged)
        for metric in ("val_acc", "auc", "balanced_acc"):
            row[f"{metric}_mean"] = round(pool([r], metric).mean, 4)
        row.update(iterations=r.get("iterations"), updates=r.get("updates"), distill_seconds=r.get("distill_seconds"),
                   peak_memory_mb=r.get("peak_memory_mb"), device=r.get("device"))
        rows.append(row)
    columns = ["job_id", "method", "dataset", "resolution", "ipc", "eval_model", "budget", "budget_version",
               "protocol", "seed", "label_type", "variant", "test_acc_mean", "test_acc_std", "test_acc_n", "diverged",
               "val_acc_mean",
               "auc_mean", "balanced_acc_mean", "iterations", "updates", "distill_seconds", "peak_memory_mb",
               "device"]
    if untrusted(records):  # a column of its own only where some record is not trusted here
        for row, r in zip(rows, sorted(records, key=record_order)):
            row["verification"] = state(r)
        columns.append("verification")
    return pd.DataFrame(rows, columns=columns)


# --- files ----------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    return write_text(path, text, newline="\n")


def _write_table(out_dir: Path, table: Table) -> list[Path]:
    csv_df = table.frame("csv")
    return [_write(out_dir / f"{table.stem}.csv",
                   csv_df.to_csv(lineterminator="\n", index=csv_df.index.name is not None)),
            _write(out_dir / f"{table.stem}.md",
                   to_markdown(table.frame("md"), table.title, [*table.notes, *legend(table.records)], table.records,
                               table.failures))]


def _cell_notes(protocol: str, budget: str, eval_note: str, version: int = 1) -> list[str]:
    return [f"Protocol `{protocol}`, budget `{budget}` (its definition version {version}), {eval_note}.",
            "Cells: mean ± std (numpy, ddof=0) in points over the per-model values of all seeds pooled; "
            f"[lo, hi] = {LEVEL * 100:.0f} % confidence interval of the mean, a t-interval over the seed means (each "
            "seed's mean over its models; none for one seed); n = number of trained evaluation models.",
            f"Verdict per column (`real` and cells that lost models or seeds to divergence do not compete): the best "
            f"mean among the cells with at least {MIN_SEEDS} seeds is **bold** only where it beats every other such "
            f"cell under Welch's two-sided t-test over seed means, Holm-corrected over those comparisons, at "
            f"p < {ALPHA:g}; otherwise {TIE} marks a tie: the best and every cell not significantly below it (a "
            "lone contender ties). A cell with one seed cannot be tested: it is shown unranked, never best or tied. "
            "No mark: significantly below the best, or, in a cell that names a divergence, not ranked.",
            "\"never updated\": the record says its set never changed from its initialisation (updates = 0, "
            "e.g. a loss gate that never opened), so the cell scores the initial set; records older than the "
            "`updates` field say nothing.",
            "\"k of m seeds diverged in distillation\": k of the cell's m seeds stopped with a non-finite synthetic "
            "set, so they have no record (their failures are in `failures.jsonl`); the cell's numbers are over the "
            "other seeds only, which flatters it, and it does not compete.",
            "`real` (the full training set) is repeated in every ipc column of its dataset and eval model; "
            "\"(soft labels)\" marks methods evaluated with learned soft labels."]


def _balanced_note(records: Sequence[Record]) -> list[str]:
    shares = sorted({(r["dataset"], majority_share(r["dataset"])) for r in records if majority_dominated(r["dataset"])})
    if not shares:
        return []
    listed = ", ".join(f"{d} {share * 100:.1f} %" for d, share in shares)
    return [f"Test splits whose majority class exceeds half ({listed}): a \"bal. acc\" column beside each "
            "accuracy column gives balanced accuracy, the metric to trust there (predicting the majority class "
            "scores the majority share in accuracy, 50 % in balanced accuracy on two classes)."]


def _budget_note(budgets: list[str]) -> str:
    note = f"Our records were run at budget(s): {', '.join(f'`{b}`' for b in budgets) or 'none'}."
    smaller = [f"`{b}`" for b in budgets if b != "paper"]
    if smaller:
        note += (f" {', '.join(smaller)} {'is' if len(smaller) == 1 else 'are'} smaller than the paper's full "
                 "protocol (`paper`): numbers at a smaller budget are not expected to match it.")
    return note


def leaderboard_tables(records: Iterable[Record], paper_csv: str | os.PathLike[str] = PAPER_RESULTS,
                       failures: Iterable[Record] = ()) -> list[Table]:
    """Every accuracy table of ``records`` (the cells marking the seeds ``failures`` took), in the files' order:
    per scope (protocol, budget) the main tables (2D, then 3D; accuracy and balanced accuracy), the variants and
    the cross-architecture table, then reported vs reproduced."""
    from mddbench.results.failures import lost as still_lost

    records = sorted(records, key=record_order)
    lost_all = still_lost(failures, records)
    tables: list[Table] = []

    def add(stem: str, title: str, notes: list[str], behind: Sequence[Record], failed: Sequence[Record],
            make: Callable[..., pd.DataFrame], *args, **kwargs) -> None:
        def frame(kind: str) -> pd.DataFrame:
            return make(*args, **kwargs, bold=kind == "md", as_cells=kind == "cells")
        tables.append(Table(stem, title, tuple(notes), tuple(behind), tuple(failed), frame, suffix))

    # a scope or a 3D table that only failures hold (every job diverged) is written too, its cells saying so
    scopes = sorted({(r["protocol"], budget_label(r)) for r in [*records, *lost_all]})
    several_protocols = len({p for p, _ in scopes}) > 1
    for protocol, budget in scopes:
        recs = _scope(records, "test_acc", budget, protocol)
        lost = [f for f in lost_all if (f["protocol"], budget_label(f)) == (protocol, budget)]
        version = record_budget_version((recs or lost)[0])
        suffix = f"{protocol}_{budget}" if several_protocols else budget
        main = [r for r in recs if r["eval_model"] == "convnet" and not variant(r)]
        for dims, kind, title in ((2, "", ""), (3, "_3d", " (3D volumes)")):  # 3D sets get a table of their own
            used = [r for r in main if (r.get("dims") or 2) == dims]
            lost_here = [f for f in lost if not variant(f) and f["eval_model"] == "convnet"
                         and (f.get("dims") or 2) == dims]
            if not used and not lost_here:
                continue
            for metric, stem in (("test_acc", f"main_{suffix}{kind}"),
                                 ("balanced_acc", f"main_{suffix}{kind}_balanced_acc")):
                beside = metric == "test_acc"
                add(stem, f"Main leaderboard{title}: {METRIC_LABELS[metric]} (%), ConvNet",
                      _cell_notes(protocol, budget, "evaluated on ConvNet", version)
                      + (_balanced_note([*used, *lost_here]) if beside else []), used, lost_here,
                      main_table, used, metric, budget=budget, protocol=protocol, balanced_beside=beside,
                      lost=lost_here)
        varied = [r for r in recs if r["eval_model"] == "convnet"]
        if any(variant(r) for r in [*varied, *(f for f in lost if f["eval_model"] == "convnet")]):
            for metric, stem in (("test_acc", f"variants_{suffix}"),
                                 ("balanced_acc", f"variants_{suffix}_balanced_acc")):
                add(stem, f"Variants (ablations, time budgets): {METRIC_LABELS[metric]} (%), ConvNet",
                      _cell_notes(protocol, budget, "rows in [brackets] are runs with the hyperparameter overrides "
                                  "or distillation time budget shown", version),
                      [r for r in varied if variant(r)], [f for f in lost if f["eval_model"] == "convnet" and variant(f)],
                      variants_table, varied, metric, budget=budget, protocol=protocol, lost=lost)
        recs = [r for r in recs if not variant(r)]
        cross = {(r["dataset"], r["ipc"]) for r in [*recs, *lost] if r["eval_model"] != "convnet" and not variant(r)}
        if cross:
            used = [r for r in recs if (r["dataset"], r["ipc"]) in cross
                    or (r["ipc"] == "full" and r["dataset"] in {d for d, _ in cross})]
            lost_here = [f for f in lost if not variant(f) and (f["dataset"], f["ipc"]) in cross]
            add(f"cross_arch_{suffix}", "Cross-architecture leaderboard: test accuracy (%)",
                  _cell_notes(protocol, budget, "each synthetic set evaluated on several networks", version),
                  used, lost_here, cross_arch_table, used, None, budget=budget, protocol=protocol, lost=lost_here)
    rvr = reported_vs_reproduced(records, paper_csv, lost=lost_all)
    notes = ["The paper's reported test accuracy (mean ± std in points; the paper writes std as a fraction) "
             "beside ours (mean ± std over pooled per-model values, n models), and ours minus reported.",
             _budget_note(sorted({budget_label(r) for r in records})),
             "Rows with table \"\" are runs the paper does not report."]
    tables.append(Table("reported_vs_reproduced", "Reported vs reproduced", tuple(notes), tuple(records),
                        tuple(lost_all), lambda kind: rvr))
    return tables


def write_leaderboards(records: Iterable[Record], out_dir: str | os.PathLike[str],
                       paper_csv: str | os.PathLike[str] = PAPER_RESULTS,
                       privacy: Iterable[Record] = (), failures: Iterable[Record] = ()) -> list[Path]:
    """Write every leaderboard (CSV + markdown) for ``records`` (and ``privacy`` results, if any)
    into ``out_dir``, the cells marking the seeds ``failures`` took; return the paths."""
    records = sorted(records, key=record_order)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for table in leaderboard_tables(records, paper_csv, failures):
        paths += _write_table(out, table)
    paths.append(_write(out / "records.csv", tidy(records).to_csv(lineterminator="\n", index=False)))
    privacy = list(privacy)
    if privacy:
        paths += write_privacy_leaderboard(privacy, out, {r.get("id") for r in untrusted(records)})
    return paths
