"""Budgets: named presets that scale experts, distillation and evaluation together.

``paper`` is the full protocol (10 models x 1000 epochs, 100 experts x 50 epochs, the methods'
official iteration counts); ``quick`` fits minutes on two CPU cores for a 28 px, 2-class dataset;
``medium`` (10 %) is sized for minutes of one GPU; ``smoke`` runs in seconds for tests. A scaled
budget gives every method the same ``share`` of its official distillation iterations
(:func:`official_share`, listed by ``mddbench list methods --budget quick``; :mod:`mddbench.api.parity`
checks it); what else a method scales per iteration
(student steps, real batch sizes) is its own ``Method.budgets``. ``smoke`` is plumbing for tests,
not a budget to compare methods at: its iteration counts are each method's own small numbers.
The budget's name and version are recorded with every result, and results of
different budgets, or of different versions of one budget, are never pooled in one leaderboard.

``version`` counts the definitions a budget has had (its fields and the methods' per-budget scaling):
bump it whenever either changes what a run at that budget does. Records made before versions existed
carry no ``budget_version``: they are version 1.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from mddbench.errors import MddError
from mddbench.registry import Registry


@dataclass(frozen=True)
class Budget:
    name: str
    eval_models: int  # networks trained per evaluation
    eval_epochs: int  # epochs per evaluation network on a synthetic set
    real_epochs: int  # epochs for the `real` reference row (full train split)
    experts: int  # expert trajectories per buffer
    expert_epochs: int  # epochs per expert (snapshots = epochs + 1)
    share: float | None = None  # of each method's official iterations (None: the methods' own fixed values)
    real_min_steps: int = 0  # the `real` row trains at least this many SGD steps (more epochs on a small split)
    version: int = 1  # the budget's definition (see the module docstring)

    def as_dict(self) -> dict:
        return asdict(self)


BUDGETS: Registry = Registry("budget", expects=Budget)
for _budget in (
    Budget("smoke", eval_models=2, eval_epochs=20, real_epochs=1, experts=2, expert_epochs=3),
    # version 2: 2 % of every method's official iterations (version 1 gave 0.2 % to 10 %), and `real` trains
    # for at least 3 x eval_epochs SGD steps (version 1: 30 epochs, 90 steps on BreastMNIST);
    # version 3: PTM's beta2 10 (chosen on val; version 2 ran 1, version 1 0.01);
    # version 4: where the trajectory methods' step size is fixed on small data, it is the experts' rate (0.01),
    # not the ipc-10/50 rows' initial 0.001 (chosen on val; ipc 1 and 2 run as in version 3)
    Budget("quick", eval_models=5, eval_epochs=300, real_epochs=30, experts=4, expert_epochs=12,
           share=0.02, real_min_steps=900, version=4),
    # between the two, for one GPU's minutes (scripts/gpu_leaderboard.sh): 10 % of the official iterations,
    # 20 experts of the official 50 epochs (the methods' start epochs need no scaling), 5 x 500-epoch evaluations;
    # version 2: the fixed step size of version 4 of quick
    Budget("medium", eval_models=5, eval_epochs=500, real_epochs=50, experts=20, expert_epochs=50,
           share=0.1, real_min_steps=1500, version=2),
    # version 2: the same floor for `real`; version 3: PTM's beta2 10; version 4: quick's version 4
    Budget("paper", eval_models=10, eval_epochs=1000, real_epochs=50, experts=100, expert_epochs=50,
           share=1.0, real_min_steps=3000, version=4),
):
    BUDGETS.register(_budget.name, _budget)


def register_budget(budget: Budget, replace: bool = False) -> Budget:
    """Add a budget (a plugin's, e.g. a GPU-sized one); its name must be new unless ``replace``.
    Methods scale to it through ``share`` (their ``budgets`` entries for it, if any, add the rest)."""
    try:
        return BUDGETS.register(budget.name, budget, replace=replace)
    except MddError as exc:
        raise ValueError(f"budget {budget.name.strip().lower()!r} is already defined; pass replace=True to "
                         "redefine it") from exc


def canonical_budget(name: str) -> str:
    """The budget's registered name, whatever the case (``SMOKE`` is ``smoke``)."""
    return BUDGETS.canonical(name)


def get_budget(name: str) -> Budget:
    return BUDGETS.get(name)


def official_share(hp: dict[str, Any], budget: Budget) -> int:
    """A budget value for ``iterations``: the budget's share of the official count (``hp["iterations"]``
    when budget values are applied), at least 1."""
    if budget.share is None:
        raise ValueError(f"the {budget.name} budget has no share; give the method a fixed iteration count there")
    return max(1, round(hp["iterations"] * budget.share))


def budget_value(value: Any, hp: dict[str, Any], budget: Budget) -> Any:
    """A ``Method.budgets`` entry's value for ``hp``: a callable scales the preset, anything else is the value."""
    return value(hp, budget) if callable(value) else value


def record_budget_version(record: Mapping[str, Any]) -> int:
    """The budget definition a record ran under (records older than the field: version 1)."""
    return int(record.get("budget_version") or 1)


def budget_label(record: Mapping[str, Any]) -> str:
    """A record's budget as leaderboards group it: the name for version 1, ``<name>_v<k>`` after."""
    version = record_budget_version(record)
    return record["budget"] if version == 1 else f"{record['budget']}_v{version}"
