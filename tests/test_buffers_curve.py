"""`mddbench buffers` (expert trajectories built once, then reused) and `mddbench curve` on a snapshotted run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mddbench.budgets import get_budget
from mddbench.data import load_dataset
from mddbench.experts import ExpertProvider
from mddbench.registry import METHODS

from conftest import cli
import methodkit  # noqa: F401  (registers tiny28)

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
    assert all(0 <= p[k] <= 1 for p in points for k in ("test_acc", "val_acc"))
    seconds = [p["seconds"] for p in points]
    assert 0 < seconds[0] < seconds[1]
    assert len([line for line in out.splitlines() if line.startswith("it ")]) == len(points)
