"""Registries: decorator registration, glob listing, unknown names, plugin files and entry points."""
from __future__ import annotations

import copy
import sys

import pytest
import torch

from mddbench.api.method import Method
from mddbench.api.synset import SyntheticSet
from mddbench.cli import main
from mddbench.data.dataset import load_dataset
from mddbench.errors import MddError, UnknownNameError
from mddbench.registry import DATASETS, METHODS, NETWORKS, Registry, load_plugins
from mddbench.results.store import ResultStore, artifact_path

PLUGIN = '''
import torch
from mddbench.api.method import Method
from mddbench.registry import register_method


@register_method("{name}")
class ClassMeans(Method):
    summary = "test plugin: every synthetic image is its class's mean train image"
    defaults = {{"iterations": 1, "lr_img": 0.0}}

    def distill(self, task):
        means = [task.data.x["train"][i].mean(0) for i in task.data.class_indices()]
        return task.synset(torch.stack(means).repeat_interleave(task.ipc, 0), task.hard_labels())
'''


def write_plugin(folder, name: str):
    path = folder / f"{name}.py"
    path.write_text(PLUGIN.format(name=name))
    return path


@pytest.fixture
def methods(monkeypatch):
    """The method registry as it is now; whatever a test registers or records is forgotten afterwards."""
    METHODS.load()
    for attr in ("_items", "_aliases", "failures", "_files", "_loaded"):
        monkeypatch.setattr(METHODS, attr, copy.copy(getattr(METHODS, attr)))
    return METHODS


# ------------------------------------------------------------------------------ registration
def test_decorator_registration_aliases_and_glob():
    reg = Registry("widget")

    @reg.register("Alpha", aliases=("first",))
    def alpha():
        return "a"

    beta, gamma = object(), object()
    reg.register("beta", beta)
    reg.register("gamma", gamma)

    assert alpha() == "a"  # the decorator hands the function back
    assert reg.get("alpha") is alpha and reg.get("ALPHA") is alpha and reg.get("first") is alpha
    assert reg.get("beta") is beta
    assert "first" in reg and "Beta" in reg and "delta" not in reg
    assert reg.names() == ["alpha", "beta", "gamma"]
    assert reg.names("g*") == ["gamma"]
    assert reg.names("*ta") == ["beta"]
    assert reg.names("?e*") == ["beta"]
    assert reg.items() == [("alpha", alpha), ("beta", beta), ("gamma", gamma)]

    reg.register("beta", beta)  # the same object again is harmless
    with pytest.raises(MddError, match="widget 'beta' is already registered"):
        reg.register("beta", gamma)
    reg.register("beta", gamma, replace=True)
    assert reg.get("beta") is gamma


def test_builtin_registries_list_by_glob():
    assert {"random", "real", "mtt"} <= set(METHODS.names())
    assert {"random", "real"} <= set(METHODS.names("r*")) and "mtt" not in METHODS.names("r*")
    for name, cls in METHODS.items():
        assert issubclass(cls, Method) and cls.name == name  # the decorator names the class
    assert NETWORKS.names("convnet*") == ["convnet", "convnet_bn"]
    assert NETWORKS.names("RESNET*") == ["resnet18", "resnet18_bn"]
    assert DATASETS.names("organmnist3d*") == ["organmnist3d", "organmnist3d_64"]
    assert {"demo", "pathmnist", "breastmnist", "covid19-cxr", "skin-ham", "breast-uls"} <= set(DATASETS.names())
    assert DATASETS.get("organ3d") is DATASETS.get("organmnist3d")  # alias


@pytest.mark.parametrize("registry, name, known", [
    (METHODS, "nosuchmethod", ["random", "real", "mtt"]),
    (DATASETS, "nosuchset", ["breastmnist", "demo", "pathmnist"]),
    (NETWORKS, "nosuchnet", ["convnet", "lenet", "resnet18"]),
])
def test_unknown_name_is_an_error_listing_the_known_ones(registry, name, known):
    with pytest.raises(UnknownNameError) as info:
        registry.get(name)
    message = str(info.value)
    assert message.startswith(f"unknown {registry.kind} {name!r}; known {registry.kind}s: ")
    for k in known:
        assert k in message
    assert isinstance(info.value, KeyError)  # callers may catch it as a KeyError


# ------------------------------------------------------------------------------ plugin files
def test_plugin_file_registers_a_method_that_runs(methods, tmp_path):
    path = write_plugin(tmp_path, "plugin_means")
    out = tmp_path / "out"
    rc = main(["run", "--plugin", str(path), "--method", "plugin_means", "--dataset", "demo", "--ipc", "2",
               "--budget", "smoke", "--out", str(out), "--quiet"])
    assert rc == 0
    cls = METHODS.get("plugin_means")
    assert issubclass(cls, Method) and cls.name == "plugin_means"
    load_plugins([str(path)])  # loading the same file again changes nothing
    assert METHODS.get("plugin_means") is cls

    [record] = ResultStore(out / "results.sqlite").records()
    assert (record["method"], record["dataset"], record["ipc"]) == ("plugin_means", "demo", 2)
    assert record["budget"] == "smoke"
    synset = SyntheticSet.load(artifact_path(record, out))
    data = load_dataset("demo")
    means = torch.stack([data.x["train"][i].mean(0) for i in data.class_indices()])
    torch.testing.assert_close(synset.images, means.repeat_interleave(2, 0))  # the plugin's distill ran
    assert synset.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_broken_plugin_is_reported_by_name_and_the_rest_still_works(methods, tmp_path, capsys):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("import mddbench\nraise RuntimeError('kaboom')\n")
    clash = tmp_path / "clash_plugin.py"  # takes a built-in's name
    clash.write_text(PLUGIN.format(name="random"))
    good = write_plugin(tmp_path, "plugin_good")

    with pytest.raises(MddError, match=r"broken_plugin\.py.*RuntimeError: kaboom"):
        load_plugins([str(broken)])
    with pytest.raises(MddError, match=r"clash_plugin\.py.*'random' is already registered"):
        load_plugins([str(clash)])
    with pytest.raises(MddError, match=r"missing\.py' does not exist"):
        load_plugins([str(tmp_path / "missing.py")])
    assert "kaboom" in METHODS.failures[str(broken)]
    load_plugins([str(good)])
    assert "plugin_good" in METHODS and METHODS.get("random").__module__ == "mddbench.methods.random"
    with pytest.raises(UnknownNameError, match=r"failed to load: .*broken_plugin\.py: RuntimeError: kaboom"):
        METHODS.get("from_the_broken_plugin")

    capsys.readouterr()
    assert main(["list", "methods", "--plugin", str(broken), "--plugin", str(good)]) == 0
    out, err = capsys.readouterr()
    assert "plugin_good" in out and "random" in out and "real" in out
    assert f"plugin {broken} failed to load" in err and "kaboom" in err

    # asked to run with it, the run stops before any work and names the file
    rc = main(["run", "--plugin", str(broken), "--method", "random", "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2 and "broken_plugin.py" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


HALF_BROKEN = '''
import dataclasses
from mddbench.data.dataset import get_spec
from mddbench.registry import register_dataset
register_dataset("half_demo", dataclasses.replace(get_spec("demo"), name="half_demo"))
raise RuntimeError("second half broken")
'''


def test_a_plugin_that_fails_halfway_registers_nothing(methods, monkeypatch, tmp_path):
    """What it registered before the error (a method, a dataset) must not stay behind, half imported."""
    for attr in ("_items", "_aliases"):
        monkeypatch.setattr(DATASETS, attr, copy.copy(getattr(DATASETS, attr)))
    half = tmp_path / "half_plugin.py"
    half.write_text(PLUGIN.format(name="half_first") + HALF_BROKEN)
    with pytest.raises(MddError, match="second half broken"):
        load_plugins([str(half)])
    assert "half_first" not in METHODS and "half_demo" not in DATASETS
    assert "random" in METHODS and "demo" in DATASETS  # what was there before stays

    clash = tmp_path / "clash_after_one.py"  # registers a new name, then collides with a built-in
    again = PLUGIN.format(name="dm").replace("class ClassMeans", "class Again")
    clash.write_text(PLUGIN.format(name="fresh_name") + again)
    with pytest.raises(MddError, match="'dm' is already registered"):
        load_plugins([str(clash)])
    assert "fresh_name" not in METHODS and METHODS.get("dm").__module__ == "mddbench.methods.dm"


# ----------------------------------------------------------------------------- entry points
EP_OBJECT = '''
from mddbench.api.method import Method


class EntryPointMethod(Method):  # not decorated: registered under its entry point's name
    summary = "entry-point plugin (an object)"

    def distill(self, task):
        return task.synset(task.initial_images("noise"), task.hard_labels())
'''
EP_MODULE = '''
from mddbench.api.method import Method
from mddbench.registry import register_method


@register_method("ep_decorated")
class Decorated(Method):  # registered by its decorator when the entry point imports the module
    summary = "entry-point plugin (a module)"
'''
ENTRY_POINTS = """
[mddbench.methods]
ep_object = mdd_ep_object:EntryPointMethod
ep_module = mdd_ep_module
ep_broken = mdd_ep_broken
ep_no_attr = mdd_ep_object:DoesNotExist
"""


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """An installed distribution with ``mddbench.methods`` entry points, found through sys.path."""
    site = tmp_path / "site"
    info = site / "mddbench_fake_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mddbench-fake-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "mdd_ep_object.py").write_text(EP_OBJECT)
    (site / "mdd_ep_module.py").write_text(EP_MODULE)
    (site / "mdd_ep_broken.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [m for m in sys.modules if m.startswith("mdd_ep_")]:
        del sys.modules[name]


def test_entry_points_are_discovered_and_broken_ones_reported(fake_distribution, methods):
    reg = Registry("method", None, "mddbench.methods")
    assert {"ep_object"} <= set(reg.names("ep_*"))
    cls = reg.get("ep_object")
    assert cls.__name__ == "EntryPointMethod" and cls.name == "ep_object"
    assert "ImportError: missing dependency xyz" in reg.failures["ep_broken"]
    assert "DoesNotExist" in reg.failures["ep_no_attr"]
    with pytest.raises(UnknownNameError, match="ep_broken: ImportError: missing dependency xyz"):
        reg.get("ep_broken")


def test_method_registry_loads_entry_points_beside_builtins(fake_distribution, methods, capsys):
    methods._loaded = False  # as in a fresh process with the distribution installed
    assert {"ep_decorated", "ep_object", "random", "real", "mtt"} <= set(METHODS.names())
    assert METHODS.get("ep_decorated").__module__ == "mdd_ep_module"
    assert {"ep_broken", "ep_no_attr"} <= set(METHODS.failures)
    assert main(["list", "methods"]) == 0
    out, err = capsys.readouterr()
    assert "ep_decorated" in out and "ep_object" in out and "random" in out
    assert "plugin ep_broken failed to load: ImportError: missing dependency xyz" in err


# ---------------------------------------------------------------------------- declared capabilities
def test_a_plugin_reference_row_is_handled_by_what_it_declares_not_its_name(methods):
    """A plugin's whole-train-split reference (``uses_ipc = False``, ``reference = True``) gets one sweep
    job per seed whatever --ipc says, and its leaderboard row is listed last and never made bold."""
    from mddbench.report.leaderboard import is_reference, main_table
    from mddbench.run.job import Job
    from mddbench.scaleout.sweep import expand

    @methods.register("oracle_subset")
    class Oracle(Method):
        uses_ipc, reference, shareable = False, True, False

        def distill(self, task):
            return SyntheticSet(task.data.x["train"], task.data.y["train"])

    jobs = expand(["oracle_subset", "random"], ["demo"], [1, 2, 10], [0, 1], budget="smoke")
    assert sorted((j.method, j.ipc) for j in jobs) == [("oracle_subset", None)] * 2 + \
        [("random", 1), ("random", 1), ("random", 2), ("random", 2), ("random", 10), ("random", 10)]
    assert Job(method="oracle_subset", dataset="demo", ipc=7).ipc is None
    assert is_reference("oracle_subset") and is_reference("real") and not is_reference("ptm")
    assert not is_reference("not_registered_anywhere")

    def record(method, ipc, seed, acc):
        stat = {"per_model": [acc], "mean": acc, "std": 0.0, "n": 1}
        return {"job_id": f"{method}{seed}", "method": method, "dataset": "demo", "ipc": ipc,
                "eval_model": "convnet", "protocol": "v1", "budget": "smoke", "seed": seed,
                "metrics": {m: stat for m in ("test_acc", "val_acc", "auc", "balanced_acc")}}

    records = [record("oracle_subset", "full", s, 0.99) for s in range(3)]
    records += [record("random", 2, s, 0.30 + 0.001 * s) for s in range(3)]
    records += [record("dm", 2, s, 0.60 + 0.001 * s) for s in range(3)]
    table = main_table(records, "test_acc", bold=True)
    assert list(table.index) == ["random", "dm", "oracle_subset"]
    cell = table.loc["oracle_subset"].iloc[0]
    assert "**" not in cell and "**" in table.loc["dm"].iloc[0]  # dm is best of the methods, not the reference
