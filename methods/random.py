"""``random``: a random real subset of ipc images per class, the reference every method must beat."""
from mddbench.method import Method, Task
from mddbench.registry import register_method
from mddbench.synset import SyntheticSet


@register_method("random")
class RandomSubset(Method):
    summary = "reference row: ipc random real train images per class"

    def distill(self, task: Task) -> SyntheticSet:
        return task.synset(task.initial_images("real"), task.hard_labels())
