"""scripts/val_table.py: open values are ranked on val balanced accuracy, never on test."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "val_table.py"


@pytest.fixture(scope="module")
def val_table():
    spec = importlib.util.spec_from_file_location("val_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(beta2, seed, val_bal, test):
    stat = lambda v: {"per_model": v, "mean": sum(v) / len(v), "std": 0.0, "n": len(v)}  # noqa: E731
    return {"seed": seed, "overrides": {"beta2": beta2},
            "metrics": {"val_balanced_acc": stat(val_bal), "val_acc": stat([0.5, 0.5]), "test_acc": stat(test),
                        "balanced_acc": stat(test)}}


def test_rows_pool_seeds_and_networks_and_rank_by_val_balanced_accuracy(val_table):
    records = [record(0.01, 0, [0.30, 0.40], [0.99, 0.99]), record(0.01, 1, [0.50, 0.40], [0.99, 0.99]),
               record(1.0, 0, [0.45, 0.45], [0.10, 0.10])]
    (best, s), (other, t) = val_table.rows(records, ["beta2"])
    assert best == "beta2=1.0" and other == "beta2=0.01"  # the better test score does not win
    assert s["val_balanced_acc"] == pytest.approx((45.0, 0.0)) and s["seeds"] == 1 and s["networks"] == 2
    assert t["val_balanced_acc"][0] == pytest.approx(40.0) and t["val_balanced_acc"][1] == pytest.approx(7.0711, 1e-4)
    assert t["seeds"] == 2 and t["networks"] == 4


def test_runs_group_by_the_values_they_used_not_by_their_overrides(val_table):
    """A run that left beta2 at a default of 10 and one that set 10 are one row; one made when the
    default was 1 is another, and --where keeps only runs that used a value."""
    def run(hparams, overrides, val_bal):
        return {**record(None, 0, val_bal, [0.5]), "hparams": hparams, "overrides": overrides}

    records = [run({"beta2": 10.0, "end_epoch": 6}, {"beta2": 10.0, "end_epoch": 6}, [0.4]),
               run({"beta2": 10.0, "end_epoch": 4}, {"end_epoch": 4}, [0.6]),
               run({"beta2": 1.0, "end_epoch": 4}, {"end_epoch": 4}, [0.2])]
    assert [label for label, _ in val_table.rows(records, ["beta2"])] == ["beta2=10.0", "beta2=1.0"]
    picked = val_table.rows(records, ["end_epoch"], where={"beta2": "10"})  # 10 is 10.0
    assert [(label, s["networks"]) for label, s in picked] == [("end_epoch=4", 2), ("end_epoch=6", 2)]


def test_runs_group_by_the_budget_version_they_ran_under(val_table):
    """A default that changed with a budget version is compared across versions: records without the
    field ran under version 1."""
    def run(version, lr, val_bal):
        extra = {} if version is None else {"budget_version": version}
        return {**record(None, 0, val_bal, [0.5]), "hparams": {"lr_teacher": lr}, "overrides": {}, **extra}

    records = [run(3, 0.001, [0.2]), run(4, 0.01, [0.4]), run(4, 0.01, [0.3]), run(None, 0.001, [0.1])]
    labels = [(label, s["networks"]) for label, s in val_table.rows(records, ["budget_version", "lr_teacher"])]
    assert labels == [("budget_version=4, lr_teacher=0.01", 4), ("budget_version=3, lr_teacher=0.001", 2),
                      ("budget_version=1, lr_teacher=0.001", 2)]


def test_the_published_records_jsonl_is_read_directly(val_table, tmp_path, capsys):
    import json

    rows = [dict(run, method="ptm", dataset="retinamnist", ipc=10, eval_model="convnet", protocol="v1",
                 budget="quick", job_id=f"j{i}", metrics={**run["metrics"], "auc": run["metrics"]["test_acc"]})
            for i, run in enumerate(
            ({**record(None, 0, [0.3], [0.9]), "hparams": {"lr_teacher": 0.001}, "overrides": {}},
             {**record(None, 0, [0.5], [0.1]), "hparams": {"lr_teacher": 0.01}, "overrides": {}, "budget_version": 4}))]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert val_table.main([str(path), "--method", "ptm", "--dataset", "retinamnist", "--ipc", "10",
                           "--by", "budget_version", "lr_teacher"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| budget_version=4, lr_teacher=0.01 | 50.00") and "budget_version=1" in table[3]
    assert val_table.main([str(path), "--method", "dm", "--dataset", "retinamnist", "--ipc", "10"]) == 1
    capsys.readouterr()
    rows[1]["seed"] = 2  # a seed run after the choice is left out with --seeds
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert val_table.main([str(path), "--method", "ptm", "--dataset", "retinamnist", "--ipc", "10",
                           "--by", "lr_teacher", "--seeds", "0", "1"]) == 0
    assert [line.split(" |")[0] for line in capsys.readouterr().out.splitlines()[2:]] == ["| lr_teacher=0.001"]


def test_a_value_whose_seed_diverged_is_counted_and_ranked_after_the_values_that_did_not(val_table):
    records = [record(10.0, 0, [0.60, 0.60], [0.5]), record(10.0, 1, [0.62, 0.62], [0.5]),
               record(1.0, 0, [0.40, 0.40], [0.5]), record(1.0, 1, [0.42, 0.42], [0.5])]
    failure = {"seed": 2, "overrides": {"beta2": 10.0}, "hparams": {"beta2": 10.0}}  # its third seed diverged
    ranked = val_table.rows(records, ["beta2"], failures=[failure])
    assert [(label, s["diverged"], s["seeds"]) for label, s in ranked] == [("beta2=1.0", 0, 2), ("beta2=10.0", 1, 2)]


def test_time_budgeted_runs_never_pool_with_the_runs_of_an_iteration_budget(val_table):
    """The equal-time runs of MTT share budget_version and lr_teacher with its default runs; grouping by
    those alone pooled them (leaderboards/README.md's ipc-10 step-size table then read 41.36, not its 41.68)."""
    def run(val_bal, time_budget=None):
        return {**record(None, 0, val_bal, [0.5]), "hparams": {"lr_teacher": 0.01}, "budget_version": 4,
                "overrides": {"iterations": "100000"} if time_budget else {}, "time_budget": time_budget}

    labelled = val_table.rows([run([0.4]), run([0.4]), run([0.2], time_budget=700.0)],
                              ["budget_version", "lr_teacher"])
    assert [(label, s["networks"], round(s["val_balanced_acc"][0], 6)) for label, s in labelled] == [
        ("budget_version=4, lr_teacher=0.01", 4, 40.0), ("budget_version=4, lr_teacher=0.01 [time budget]", 2, 20.0)]
