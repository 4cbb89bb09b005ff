"""``real``: the same network trained on the full train split (the upper reference row).

Trained with the evaluation protocol's optimiser, schedule and DSA, for ``budget.real_epochs``
epochs (1000 epochs on a full medical dataset would be absurd; the official DC/MTT whole-data
numbers also come from a separate recipe), but never for fewer SGD steps than
``budget.real_min_steps``: on a small train split 30 epochs are few steps (BreastMNIST: 546
images, 3 batches, 90 steps against the 300 a one-batch synthetic set gets), and LeNet still
predicts the majority class after them. The floor, three times a one-batch set's steps, is the
smallest of those measured on the val split at which LeNet left the majority class for all three
seeds (leaderboards/README.md, "The quick-budget leaderboard"). Its "synthetic set" is patient data: never saved.
"""
from mddbench.api.budgets import Budget
from mddbench.api.method import Method, Task
from mddbench.api.synset import SyntheticSet
from mddbench.registry import register_method


@register_method("real")
class FullTrainSet(Method):
    summary = "reference row: the full train split, trained for budget.real_epochs epochs"
    shareable = False
    uses_ipc = False
    reference = True
    selects_real = True

    def eval_overrides(self, budget: Budget) -> dict:
        return {"epochs": budget.real_epochs, "lr": 0.01, "min_steps": budget.real_min_steps}

    def distill(self, task: Task) -> SyntheticSet:
        return SyntheticSet(task.data.x["train"], task.data.y["train"])
