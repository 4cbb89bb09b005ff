"""`mddbench buffers` (expert trajectories built once, then reused) and `mddbench curve` on a snapshotted run."""
from __future__ import annotations

import json

import methodkit  # noqa: F401  (registers tiny28)
import pytest
import torch
from conftest import cli

from mddbench.api.budgets import get_budget
from mddbench.data.dataset import load_dataset
from mddbench.evaluation.metrics import METRICS
from mddbench.registry import METHODS
from mddbench.trajectory.experts import ExpertProvider

pytestmark = pytest.mark.usefixtures("isolated")  # no ambient data root, ~/.medmnist or network


@pytest.mark.slow
def test_buffers_builds_the_recipe_mtt_declares_and_then_reuses_it(tmp_path, capsys):
    data, budget = load_dataset("tiny28"), get_budget("smoke")  # 120 train images: the buffer in seconds
    mtt = METHODS.get("mtt")()
    [recipe] = mtt.expert_recipes(mtt.resolve(data.spec, 2, budget, {}))
    folder = ExpertProvider(tmp_path / "experts", data, budget, torch.device("cpu"), progress=False).folder(recipe)

    args = ["buffers", "--dataset", "tiny28", "--budget", "smoke", "--device", "cpu", "--out", tmp_path, "--quiet"]
    rc, out, _ = cli(capsys, *args)
    assert rc == 0 and f"{budget.experts} experts x {budget.expert_epochs} epochs in {folder} " in out
    experts = sorted(p.name for p in folder.glob("expert_*.safetensors"))
    assert experts == [f"expert_{i:03d}.safetensors" for i in range(budget.experts)]
    meta = json.loads((folder / "meta.json").read_text())
    assert sorted(meta["experts"]) == [str(i) for i in range(budget.experts)] and meta["dataset"] == "tiny28"
    assert all(0 <= e["test_acc"] <= 1 for e in meta["experts"].values())
    built = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    rc, again, _ = cli(capsys, *args)
    assert rc == 0 and again == out  # same folder, same experts, same mean accuracy
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == built  # nothing rebuilt or rewritten

    # FTD reads flat experts: `--method ftd` builds those, in another folder
    ftd = METHODS.get("ftd")()
    [flat] = ftd.expert_recipes(ftd.resolve(data.spec, 2, budget, {}))
    flat_folder = ExpertProvider(tmp_path / "experts", data, budget, torch.device("cpu"), progress=False).folder(flat)
    rc, out, _ = cli(capsys, *args, "--method", "ftd")
    assert rc == 0 and flat_folder != folder and f"in {flat_folder} " in out and (flat_folder / "meta.json").is_file()
    assert cli(capsys, *args, "--method", "dm")[0] == 2  # DM matches no trajectories: a clear error


@pytest.mark.slow
def test_curve_of_a_run_with_snapshots(tmp_path, capsys):
    rc, _, _ = cli(capsys, "run", "--method", "dm", "--dataset", "demo", "--ipc", "2", "--budget", "smoke",
                   "--snapshot-every", "5", "--eval-n-models", "1", "--eval-epochs", "2", "--device", "cpu",
                   "--out", tmp_path, "--quiet")
    assert rc == 0
    [run] = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["it000005.safetensors", "it000010.safetensors"]

    rc, out, _ = cli(capsys, "curve", run, "--eval-n-models", "1", "--eval-epochs", "2", "--device", "cpu")
    assert rc == 0 and f"wrote {run / 'curve.json'}" in out
    points = json.loads((run / "curve.json").read_text())
    assert [p["iteration"] for p in points] == [5, 10]  # smoke DM: 10 iterations, one snapshot every 5
    assert all(0 <= p[k] <= 1 for p in points for k in ("test_acc", "val_acc", "balanced_acc", "val_balanced_acc"))
    assert all(p["settings"] == {"eval_n_models": 1, "eval_epochs": 2} for p in points)
    seconds = [p["seconds"] for p in points]
    assert 0 < seconds[0] < seconds[1]
    assert len([line for line in out.splitlines() if line.startswith("it ")]) == len(points)


class _CountingEval:
    """evaluate_fn for accuracy_curve: counts calls, scores a set by its iteration (no training)."""

    def __init__(self):
        self.calls = []

    def __call__(self, synset):
        from types import SimpleNamespace
        it = synset.meta["iteration"]
        self.calls.append(it)
        score = {k: {"mean": it / 100, "std": 0.0} for k in METRICS}
        return SimpleNamespace(summary=lambda: score)


def _snapshotted_run(tmp_path, iterations=(10, 20, 30, 40)):
    from mddbench.api.synset import SyntheticSet
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    for it in iterations:
        SyntheticSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), meta={"iteration": it, "seconds": it / 2}).save(
            run / "snapshots" / f"it{it:06d}.safetensors")
    return run


def test_a_curve_keeps_balanced_accuracy_and_resumes_where_it_was_killed(tmp_path):
    from mddbench.report.figures import accuracy_curve
    run, settings = _snapshotted_run(tmp_path), {"eval_n_models": 3, "eval_epochs": 300}
    first = _CountingEval()

    def dies_at_30(synset):
        if synset.meta["iteration"] == 30:
            raise KeyboardInterrupt
        return first(synset)

    with pytest.raises(KeyboardInterrupt):
        accuracy_curve(run, dies_at_30, settings=settings)
    kept = json.loads((run / "curve.json").read_text())
    assert [p["iteration"] for p in kept] == [10, 20]  # the points before the kill were written
    assert kept[1]["balanced_acc"] == 0.2 and kept[1]["val_balanced_acc"] == 0.2 and kept[1]["settings"] == settings

    again = _CountingEval()
    curve = accuracy_curve(run, again, settings=settings)
    assert again.calls == [30, 40]  # only what was missing
    assert [p["iteration"] for p in curve] == [10, 20, 30, 40] == [p["iteration"] for p in
                                                                    json.loads((run / "curve.json").read_text())]

    other = _CountingEval()
    accuracy_curve(run, other, settings={"eval_n_models": 1, "eval_epochs": 300}, points=2)
    assert other.calls == [10, 40]  # other settings: evaluated afresh, the two points asked for
    assert [p["iteration"] for p in json.loads((run / "curve.json").read_text())] == [10, 40]


def test_a_curve_written_before_balanced_accuracy_is_evaluated_again(tmp_path):
    from mddbench.report.figures import accuracy_curve
    run = _snapshotted_run(tmp_path, (10, 20))
    (run / "curve.json").write_text(json.dumps([{"iteration": i, "seconds": i / 2, "test_acc": 0.5, "test_std": 0.0,
                                                  "val_acc": 0.5} for i in (10, 20)]))
    counting = _CountingEval()
    curve = accuracy_curve(run, counting, settings={})
    assert counting.calls == [10, 20] and [p["balanced_acc"] for p in curve] == [0.1, 0.2]
