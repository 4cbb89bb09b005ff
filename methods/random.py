"""``random``: a random real subset of ipc images per class, the reference every method must beat."""
from mddbench.api.method import Method, Task
from mddbench.api.synset import SyntheticSet
from mddbench.registry import register_method


@register_method("random")
class RandomSubset(Method):
    summary = "reference row: ipc random real train images per class"
    selects_real = True

    def distill(self, task: Task) -> SyntheticSet:
        return task.synset(task.initial_images("real"), task.hard_labels())
