"""mddbench: the medical dataset distillation benchmark.

The names a plugin needs are importable from here (loaded on first use, so ``import mddbench``
stays cheap): ``Method``, ``Task``, ``SyntheticSet``, ``register_method``, ``register_dataset``,
``register_network``, ``register_budget``, ``Budget``, ``register_renderer``, ``DatasetSpec``, ``load_dataset``, ``evaluate``, ``EvalConfig``, ``distill_loop``, and ``configure_allocator`` (one call makes a
program that trains on the CPU skip the page faults of glibc's default allocator settings; the CLI
makes it itself).
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Method": "mddbench.method", "Task": "mddbench.method", "SyntheticSet": "mddbench.synset",
    "register_method": "mddbench.registry", "register_dataset": "mddbench.registry",
    "register_network": "mddbench.registry", "DatasetSpec": "mddbench.data", "load_dataset": "mddbench.data",
    "evaluate": "mddbench.evaluate", "EvalConfig": "mddbench.evaluate", "distill_loop": "mddbench.loop",
    "configure_allocator": "mddbench.allocator", "Budget": "mddbench.budgets", "register_budget": "mddbench.budgets",
    "register_renderer": "mddbench.synset",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mddbench' has no attribute {name!r}")
