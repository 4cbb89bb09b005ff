"""Budgets: named presets that scale experts, distillation and evaluation together.

``paper`` is the full protocol (10 models x 1000 epochs, 100 experts x 50 epochs, the methods'
official iteration counts); ``quick`` fits minutes on two CPU cores for a 28 px, 2-class dataset;
``smoke`` runs in seconds for tests. Each method scales its own iteration counts per budget
(``Method.budgets``); the budget's name and version are recorded with every result, and results of
different budgets, or of different versions of one budget, are never pooled in one leaderboard.

``version`` counts the definitions a budget has had (its fields and the methods' per-budget scaling):
bump it whenever either changes what a run at that budget does. Records made before versions existed
carry no ``budget_version``: they are version 1.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .errors import UnknownNameError


@dataclass(frozen=True)
class Budget:
    name: str
    eval_models: int  # networks trained per evaluation
    eval_epochs: int  # epochs per evaluation network on a synthetic set
    real_epochs: int  # epochs for the `real` reference row (full train split)
    experts: int  # expert trajectories per buffer
    expert_epochs: int  # epochs per expert (snapshots = epochs + 1)
    version: int = 1  # the budget's definition (see the module docstring)

    def as_dict(self) -> dict:
        return asdict(self)


BUDGETS: dict[str, Budget] = {
    "smoke": Budget("smoke", eval_models=2, eval_epochs=20, real_epochs=1, experts=2, expert_epochs=3),
    "quick": Budget("quick", eval_models=5, eval_epochs=300, real_epochs=30, experts=4, expert_epochs=12),
    "paper": Budget("paper", eval_models=10, eval_epochs=1000, real_epochs=50, experts=100, expert_epochs=50),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise UnknownNameError(f"unknown budget {name!r}; known budgets: {', '.join(BUDGETS)}")
    return BUDGETS[name]


def record_budget_version(record: Mapping[str, Any]) -> int:
    """The budget definition a record ran under (records older than the field: version 1)."""
    return int(record.get("budget_version") or 1)


def budget_label(record: Mapping[str, Any]) -> str:
    """A record's budget as leaderboards group it: the name for version 1, ``<name>_v<k>`` after."""
    version = record_budget_version(record)
    return record["budget"] if version == 1 else f"{record['budget']}_v{version}"
