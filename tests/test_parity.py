"""Budget parity: every method gets the same share of its official iterations at a scaled budget."""
from __future__ import annotations

from dataclasses import replace

import pytest

from mddbench.api.budgets import BUDGETS, get_budget, official_share
from mddbench.api.method import Method
from mddbench.api.parity import PARITY_FACTOR, method_share, shares, spread
from mddbench.cli import main
from mddbench.data.dataset import get_spec
from mddbench.registry import METHODS
from mddbench.run.job import Job
from mddbench.run.record import make_record

BUILT_IN = ("dc", "dsa", "dm", "cafe", "ncfm", "mtt", "smdd", "haba", "ftd", "datm", "seqmatch", "ptm", "hoptm")


@pytest.mark.parametrize("budget", [b for b in BUDGETS.values() if b.share is not None], ids=lambda b: b.name)
@pytest.mark.parametrize("dataset", ["breastmnist", "pneumoniamnist", "retinamnist", "pathmnist"])
@pytest.mark.parametrize("ipc", [1, 2, 10, 50])
def test_every_method_gets_the_same_share(budget, dataset, ipc):
    found = shares(get_spec(dataset), ipc, budget, list(BUILT_IN))
    assert sorted(s.method for s in found) == sorted(BUILT_IN)
    assert spread(found) <= PARITY_FACTOR, [(s.method, s.iterations, s.official) for s in found]
    for s in found:
        assert s.share == pytest.approx(budget.share, rel=0.25), s


def test_quick_shares_by_hand():
    spec, quick = get_spec("breastmnist"), get_budget("quick")
    got = {s.method: (s.iterations, s.official) for s in shares(spec, 2, quick, list(BUILT_IN))}
    assert got == {"dc": (20, 1000), "dsa": (20, 1000), "dm": (400, 20000), "cafe": (40, 2000), "ncfm": (400, 20000),
                   "mtt": (100, 5000), "smdd": (100, 5000), "haba": (300, 15000), "ftd": (100, 5000),
                   "datm": (200, 10000), "seqmatch": (100, 5000), "ptm": (100, 5000),
                   "hoptm": (200, 10000)}
    assert method_share("seqmatch", spec, 2, quick).unit == "iterations per stage"
    assert "inner_loop 50->5" in method_share("dc", spec, 2, quick).also
    assert method_share("real", spec, 2, quick) is None  # trains on the real split: no iterations


def test_a_method_with_its_own_fixed_count_breaks_parity():
    class Fixed(Method):
        name = "fixed"
        defaults = {"iterations": 1000}
        budgets = {"quick": {"iterations": 200}}  # 20 %, ten times everyone else's share

    METHODS.register("fixed_parity_probe", Fixed)
    try:
        found = shares(get_spec("breastmnist"), 2, get_budget("quick"), ["mtt", "fixed_parity_probe"])
        assert spread(found) == pytest.approx(10.0) and spread(found) > PARITY_FACTOR
    finally:
        METHODS._items.pop("fixed_parity_probe", None)


def test_official_share_rounds_and_needs_a_share():
    assert official_share({"iterations": 15000}, get_budget("quick")) == 300
    assert official_share({"iterations": 10}, replace(get_budget("quick"), share=0.01)) == 1  # at least one
    with pytest.raises(ValueError, match="smoke budget has no share"):
        official_share({"iterations": 100}, get_budget("smoke"))


def test_list_methods_shows_shares(capsys):
    assert main(["list", "methods", "--budget", "quick", "--ipc", "2"]) == 0
    out = capsys.readouterr().out
    haba = next(line for line in out.splitlines() if line.startswith("haba"))
    assert haba.split()[:4] == ["haba", "300", "15000", "2.00"]
    assert "largest / smallest share 1.00 (parity allows 1.25)" in out


def test_records_and_jobs_carry_the_budget_version():
    assert get_budget("quick").version == 4 and get_budget("smoke").version == 1
    quick, smoke = Job("mtt", "breastmnist", budget="quick"), Job("mtt", "breastmnist", budget="smoke")
    assert quick.identity()["budget_version"] == 4  # a quick job of an earlier version is another job
    assert "budget_version" not in smoke.identity()  # version-1 job ids are unchanged

    class Result:  # the fields make_record reads
        config = type("C", (), {"model": "convnet", "protocol": "v1", "as_dict": lambda self: {}})()
        seconds, engine = 1.0, "loop"

        def summary(self):
            return {}
    spec = get_spec("breastmnist")
    meta = {"job_id": "j", "method": "mtt", "ipc": 2, "budget": "quick"}
    assert make_record({**meta, "budget_version": 2}, spec, Result(), "quick", None)["budget_version"] == 2
    assert make_record(meta, spec, Result(), "quick", None)["budget_version"] == 1  # sets made before versions


def test_budget_scaling_does_not_depend_on_the_order_of_a_budget_entry(monkeypatch):
    """A scaler reads the official values and the entry's constants, never another scaler's result."""
    from mddbench.api.budgets import BUDGETS
    from mddbench.data.dataset import get_spec
    from mddbench.registry import METHODS

    spec = get_spec("breastmnist")
    for name in METHODS.names():
        cls = METHODS.get(name)
        for budget in BUDGETS.values():
            if budget.name not in cls.budgets:
                continue
            expected = cls().resolve(spec, 2, budget)
            reordered = dict(cls.budgets, **{budget.name: dict(reversed(list(cls.budgets[budget.name].items())))})
            monkeypatch.setattr(cls, "budgets", reordered)
            assert cls().resolve(spec, 2, budget) == expected, (name, budget.name)
            monkeypatch.undo()


def test_a_plugin_budget_registers_and_every_method_scales_to_it(monkeypatch):
    from mddbench import Budget, register_budget
    from mddbench.api import budgets as budgets_module
    from mddbench.data.dataset import get_spec
    from mddbench.registry import METHODS
    from mddbench.run.job import Job

    monkeypatch.setattr(budgets_module.BUDGETS, "_items", dict(budgets_module.BUDGETS._items))  # undone after
    gpu = register_budget(Budget("gpu10", eval_models=5, eval_epochs=500, real_epochs=50, experts=20,
                                 expert_epochs=30, share=0.1, real_min_steps=1500))
    assert Job(method="mtt", dataset="demo", budget="GPU10").budget == "gpu10"
    assert METHODS.get("mtt")().resolve(get_spec("breastmnist"), 2, gpu)["iterations"] == 500  # 10 % of 5000
    assert METHODS.get("haba")().resolve(get_spec("breastmnist"), 2, gpu)["iterations"] == 1500
    with pytest.raises(ValueError, match="already defined"):
        register_budget(Budget("quick", eval_models=1, eval_epochs=1, real_epochs=1, experts=1, expert_epochs=1))


TRAJECTORY = ("mtt", "smdd", "haba", "ftd", "datm", "seqmatch", "ptm", "hoptm")


@pytest.mark.parametrize("dataset", ["breastmnist", "retinamnist", "adrenalmnist3d"])
def test_a_fixed_student_step_size_is_the_experts_rate(dataset):
    """Budget version 4: on small data, where the student's step size is fixed, it is the rate the experts
    were trained at, at every ipc (version 3 kept the ipc-10 rows' initial 0.001 there); at ipc 1 and 2 every
    row already started at that rate, so those runs are the same in both versions."""
    spec, quick = get_spec(dataset), get_budget("quick")
    for name in TRAJECTORY:
        method = METHODS.get(name)()
        for ipc in (1, 2, 10):
            hp = method.resolve(spec, ipc, quick)
            assert hp["lr_lr"] == 0.0, (name, ipc)
            assert hp["lr_teacher"] == method.recipe(hp).lr == 0.01, (name, ipc)
        assert method.resolve(spec, 10, quick, {"lr_teacher": 0.001})["lr_teacher"] == 0.001  # a user's value wins


def test_a_learned_step_size_keeps_the_official_start():
    """With enough expert steps (PneumoniaMNIST: 19 per epoch), the step size is learned from the row's 0.001."""
    hp = METHODS.get("mtt")().resolve(get_spec("pneumoniamnist"), 10, get_budget("quick"))
    assert (hp["lr_teacher"], hp["lr_lr"]) == (0.001, 1e-05)
