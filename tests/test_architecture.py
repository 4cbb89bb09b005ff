"""The package's shape as a checked contract (issue 42): layers, no import cycles, old plugin paths."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mddbench": ROOT / "mddbench", "mddbench.methods": ROOT / "methods", "mddbench.datasets": ROOT / "datasets"}


def module_graph() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports (anywhere in its body)."""
    files = {}
    for base, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = tuple(p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__")
            files[".".join((base, *parts))] = path
    graph = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_in_a_circle():
    graph = module_graph()
    assert len(graph) > 50 and "mddbench.nn.training" in graph
    assert cycles(graph) == []


def test_a_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.skipif(shutil.which("lint-imports") is None and not (Path(sys.executable).parent / "lint-imports").exists(),
                    reason="import-linter is not installed (pip install -e '.[test]')")
def test_the_layers_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe, str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_registering_something_that_is_not_a_method_is_refused():
    import mddbench  # noqa: F401  (the Method class sets what the registry expects)
    from mddbench.errors import MddError
    from mddbench.registry import METHODS, register_method

    METHODS.load()
    with pytest.raises(MddError, match="not a Method"):
        register_method("not-a-method")(dict)
    assert "not-a-method" not in METHODS


OLD_STYLE_PLUGIN = '''
import torch
from mddbench.method import Method, Task            # the flat layout's paths, as plugins wrote them
from mddbench.registry import register_method
from mddbench.synset import SyntheticSet
from mddbench.training import constant_schedule     # any harness module a plugin may have used
from mddbench.data import DatasetSpec


@register_method("oldstyle")
class OldStyle(Method):
    summary = "first images of each class (a plugin written against the flat layout)"

    def distill(self, task: Task) -> SyntheticSet:
        x, y = task.data.x["train"], task.data.y["train"]
        idx = torch.cat([torch.nonzero(y == c)[: task.ipc, 0] for c in range(task.n_classes)])
        return SyntheticSet(x[idx], y[idx])
'''


@pytest.mark.slow
def test_a_plugin_written_against_the_flat_layout_still_runs(tmp_path):
    plugin = tmp_path / "oldstyle.py"
    plugin.write_text(OLD_STYLE_PLUGIN)
    out = subprocess.run([sys.executable, "-W", "error::SyntaxWarning", "-m", "mddbench", "run", "--plugin", str(plugin),
                          "--method", "oldstyle", "--dataset", "demo", "--ipc", "1", "--budget", "smoke", "--quiet",
                          "--device", "cpu", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "oldstyle" in out.stdout
    assert "moved to mddbench.api.method" in out.stderr or out.stderr == ""  # a deprecation, never an error


def test_the_moved_table_names_every_module_that_moved():
    import importlib

    from mddbench.moved import BECAME_PACKAGES, MOVED

    for old, new in {**MOVED, **BECAME_PACKAGES}.items():
        assert importlib.import_module(f"mddbench.{new}"), old
        assert not (ROOT / "mddbench" / f"{old}.py").exists()
