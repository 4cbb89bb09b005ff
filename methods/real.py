"""``real``: the same network trained on the full train split (the upper reference row).

Trained with the evaluation protocol's optimiser, schedule and DSA, for ``budget.real_epochs``
epochs (1000 epochs on a full medical dataset would be absurd; the official DC/MTT whole-data
numbers also come from a separate recipe). Its "synthetic set" is patient data: never saved.
"""
from mddbench.budgets import Budget
from mddbench.method import Method, Task
from mddbench.registry import register_method
from mddbench.synset import SyntheticSet


@register_method("real")
class FullTrainSet(Method):
    summary = "reference row: the full train split, trained for budget.real_epochs epochs"
    shareable = False

    def eval_overrides(self, budget: Budget) -> dict:
        return {"epochs": budget.real_epochs, "lr": 0.01}

    def distill(self, task: Task) -> SyntheticSet:
        return SyntheticSet(task.data.x["train"], task.data.y["train"])
