"""Rows and columns of every table: which record goes where, in which order, under which label.

A row is a method with its label type and its variant (overrides, a time budget); a column a dataset,
ipc and evaluation network. Reference rows (``Method.reference``: `real`) come last and are never ranked.
"""
from __future__ import annotations

from typing import Any, Sequence

from mddbench.api.budgets import budget_label
from mddbench.data.dataset import BENCHMARK
from mddbench.report.cells import Record

METHOD_ORDER = ("random", "herding", "kcenter", "dc", "dsa", "dm", "cafe", "ncfm", "mtt", "smdd", "haba", "ftd",
                "datm", "seqmatch", "hoptm", "ptm")


EVAL_MODEL_ORDER = ("convnet", "lenet", "resnet18", "alexnet")


DATASET_ORDER = BENCHMARK


REAL = "real"


ColKey = tuple[str, Any, str]  # (dataset, ipc, eval_model)


RowKey = tuple[str, str, str]  # (method, label_type, variant)


def rank(value: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def ipc_rank(ipc: Any) -> tuple[int, int]:
    return (1, 0) if ipc == "full" else (0, int(ipc))


def ipc_label(ipc: Any) -> str:
    return "full" if ipc == "full" else f"ipc{ipc}"


def variant(r: Record, seconds: bool = True) -> str:
    """What sets a run apart from its method's defaults: hyperparameter overrides and a time budget
    (``seconds=False``: "time budget" without its value, which the variants table shows per cell).

    Runs of one method with different variants are different rows (an ablation or a time-matched run
    never pools into the method's main row); the main table shows only default runs.
    """
    parts = [f"{k}={v}" for k, v in sorted((r.get("overrides") or {}).items())]
    if r.get("time_budget"):
        parts.append(f"{r['time_budget']:g} s budget" if seconds else "time budget")
    return ", ".join(parts)


def row_key(r: Record) -> RowKey:
    return (r["method"], r.get("label_type") or "hard", variant(r))


def row_key_any_time(r: Record) -> RowKey:
    """Time-matched runs of one method share a row whatever each cell's budget (the cell names it)."""
    return (r["method"], r.get("label_type") or "hard", variant(r, seconds=False))


def time_budgets(records: list[Record]) -> str:
    budgets = sorted({r["time_budget"] for r in records if r.get("time_budget")})
    return f" [{', '.join(f'{b:g} s' for b in budgets)}]" if budgets else ""


def is_reference(method: str) -> bool:
    """A reference row, as its method declares (``Method.reference``: `real`): listed last, never ranked."""
    from mddbench.registry import METHODS

    return method in METHODS and METHODS.get(method).reference


def selects_real(method: str) -> bool:
    """A row of real train images, as its method declares (``Method.selects_real``: `random`, the coresets)."""
    from mddbench.registry import METHODS

    return method in METHODS and METHODS.get(method).selects_real


def row_order(key: RowKey) -> tuple:
    return (is_reference(key[0]), rank(key[0], METHOD_ORDER), key[1], key[2])


def row_label(key: RowKey) -> str:
    label = f"{key[0]} (soft labels)" if key[1] == "soft" else key[0]
    return f"{label} [{key[2]}]" if key[2] else label


def col_key(r: Record) -> ColKey:
    return (r["dataset"], r["ipc"], r["eval_model"])


def col_order(key: ColKey) -> tuple:
    return (rank(key[0], DATASET_ORDER), ipc_rank(key[1]), rank(key[2], EVAL_MODEL_ORDER))


def record_order(r: Record) -> tuple:
    return (col_order(col_key(r)), row_order(row_key(r)), budget_label(r), r["protocol"], r["seed"], r["job_id"])
