"""Module paths from before the subpackages, for plugins written against them.

Until 0.2 the harness was one flat folder (``mddbench.training``, ``mddbench.runner``, ...). A plugin that
imports an old path keeps working: the finder below hands it the module's new home (the same module
object, so registries and ``isinstance`` agree) and warns once with the path to use. New code imports the
new paths, or the names ``mddbench`` itself exports.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "download": "data.download", "class_balance": "data.class_balance",
    "networks": "nn.networks", "augment": "nn.augment", "unroll": "nn.unroll", "batched": "nn.batched",
    "training": "nn.training",
    "method": "api.method", "synset": "api.synset", "budgets": "api.budgets", "loop": "api.loop",
    "parity": "api.parity", "saved": "api.saved",
    "evaluate": "evaluation.protocol", "metrics": "evaluation.metrics",
    "experts": "trajectory.experts", "expert_quality": "trajectory.expert_quality",
    "runner": "run.pipeline",
    "sweep": "scaleout.sweep", "executors": "scaleout.local", "ray_executor": "scaleout.ray_cluster",
    "failures": "results.failures", "privacy_store": "results.privacy_store", "jsonl": "results.jsonl",
    "merge": "results.merge",
    "leaderboard": "report.leaderboard", "privacy_leaderboard": "report.privacy_leaderboard",
    "significance": "report.significance", "figures": "report.figures", "privacy_figure": "report.privacy_figure",
    "publish": "report.publish", "show": "report.show",
    "membership": "privacy.membership", "memorisation": "privacy.memorisation",
}
# old modules whose name is now a subpackage's: the package forwards their names (``forward``)
BECAME_PACKAGES = {"data": "data.dataset", "trajectory": "trajectory.matching", "results": "results.store",
                   "privacy": "privacy.audit"}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.rpartition(".")
        if prefix == "mddbench" and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = f"mddbench.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the module ran when it was imported under its new name


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())


def forward(package: str, name: str):
    """``mddbench.<package>.<name>`` for a package whose name was a module's (``from mddbench.data import
    load_dataset`` as before)."""
    old = package.rpartition(".")[2]
    module = importlib.import_module(f"mddbench.{BECAME_PACKAGES[old]}")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
