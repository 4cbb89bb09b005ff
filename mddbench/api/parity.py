"""Budget parity: what share of its official distillation work each method gets at a budget.

A method's official work is its ``iterations`` at the ``paper`` budget (``Method.work_unit`` says
what one counts: SeqMatch's are per stage); a scaled budget should give every method the same
share of it (:func:`mddbench.api.budgets.official_share`). ``also`` lists the other hyperparameters the
budget changes, which make each iteration cheaper than an official one (student steps, real batch
sizes, windows): those are the method's own scaling, stated, not part of the share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mddbench.api.budgets import Budget, get_budget
from mddbench.data.dataset import DatasetSpec
from mddbench.registry import METHODS

# the largest share at one budget may exceed the smallest by at most this factor (rounding of small counts)
PARITY_FACTOR = 1.25


@dataclass(frozen=True)
class Share:
    method: str
    iterations: int
    official: int
    unit: str
    also: str  # the budget's other changes, "key official->scaled"

    @property
    def share(self) -> float:
        return self.iterations / self.official


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def method_share(name: str, spec: DatasetSpec, ipc: int, budget: Budget) -> Share | None:
    """The share of ``name`` at ``budget`` on ``spec`` and ``ipc`` (None: the method does not iterate)."""
    method = METHODS.get(name)()
    paper = method.resolve(spec, ipc, get_budget("paper"))
    if "iterations" not in paper:
        return None
    scaled = method.resolve(spec, ipc, budget)
    also = ", ".join(f"{k} {_short(paper[k])}->{_short(scaled[k])}" for k in sorted(scaled)
                     if k != "iterations" and k in paper and scaled[k] != paper[k])
    return Share(name, scaled["iterations"], paper["iterations"], method.work_unit, also)


def shares(spec: DatasetSpec, ipc: int, budget: Budget, names: list[str] | None = None) -> list[Share]:
    """Every (named) registered method that iterates, in registry order."""
    out = [method_share(n, spec, ipc, budget) for n in (names or METHODS.names())]
    return [s for s in out if s is not None]


def spread(found: list[Share]) -> float:
    """Largest over smallest share (1.0: perfect parity)."""
    values = [s.share for s in found]
    return max(values) / min(values) if values else 1.0
