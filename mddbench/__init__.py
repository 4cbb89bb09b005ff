"""mddbench: the medical dataset distillation benchmark.

The names a plugin needs are importable from here (loaded on first use, so ``import mddbench``
stays cheap): ``Method``, ``Task``, ``SyntheticSet``, ``register_method``, ``register_dataset``,
``register_network``, ``register_budget``, ``Budget``, ``register_renderer``, ``DatasetSpec``, ``load_dataset``, ``evaluate``, ``EvalConfig``, ``distill_loop``, and ``configure_allocator`` (one call makes a
program that trains on the CPU skip the page faults of glibc's default allocator settings; the CLI
makes it itself).
"""
import importlib

from mddbench import moved as _moved

__version__ = "0.1.0"
_moved.install()  # plugins written against the flat layout's module paths keep working (mddbench.moved)

_EXPORTS = {
    "Method": "mddbench.api.method", "Task": "mddbench.api.method", "SyntheticSet": "mddbench.api.synset",
    "register_method": "mddbench.registry", "register_dataset": "mddbench.registry",
    "register_network": "mddbench.registry", "DatasetSpec": "mddbench.data.dataset", "load_dataset": "mddbench.data.dataset",
    "evaluate": "mddbench.evaluation.protocol", "EvalConfig": "mddbench.evaluation.protocol", "distill_loop": "mddbench.api.loop",
    "configure_allocator": "mddbench.allocator", "Budget": "mddbench.api.budgets", "register_budget": "mddbench.api.budgets",
    "register_renderer": "mddbench.api.synset",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mddbench' has no attribute {name!r}")
