"""Accuracy-against-time curves and the PTM figure analogues, drawn from logged runs."""
from __future__ import annotations

import json

import pytest
from methodkit import distill, load

from mddbench.cli import main
from mddbench.errors import ConfigError
from mddbench.evaluation.protocol import EvalConfig, evaluate
from mddbench.report.figures import accuracy_curve, plot_runs


@pytest.mark.slow
def test_curve_and_figures_from_ptm_runs(tmp_path, expert_cache):
    runs = []
    for name, hp in (("with", {}), ("without", {"overlap": False})):
        run = tmp_path / name
        synset, task = distill("ptm", dataset="tiny28", ipc=4, hp={"iterations": 6, "end_epoch": 2, **hp},
                               run_dir=run, expert_root=expert_cache, snapshot_every=2)
        (run / "job.json").write_text(json.dumps({"method": "ptm", "hparams": sorted(hp.items())}))
        runs.append(run)
    data = load("tiny28")
    points = accuracy_curve(runs[0], lambda s: evaluate(s, data, EvalConfig(n_models=1, epochs=2), progress=False))
    assert [p["iteration"] for p in points] == [2, 4, 6]
    assert all(0 <= p["test_acc"] <= 1 for p in points)
    seconds = [p["seconds"] for p in points]
    assert seconds == sorted(seconds) and seconds[0] > 0
    fewer = accuracy_curve(runs[0], lambda s: evaluate(s, data, EvalConfig(n_models=1, epochs=2), progress=False),
                           points=2)
    assert [p["iteration"] for p in fewer] == [2, 6]  # evenly spaced, the last always in
    written = plot_runs(runs, tmp_path / "fig")
    names = sorted(p.name for p in written)
    assert names == ["fig3a_accuracy_vs_time.png", "fig3b_memory_vs_stage.png", "fig4a_matching_loss.png",
                     "fig5a_intra_class_mmd.png"]
    assert all(p.stat().st_size > 5000 for p in written)


def test_curve_needs_snapshots(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="snapshot-every"):
        accuracy_curve(tmp_path / "run", lambda s: None)
    assert main(["plot", str(tmp_path / "run"), "--to", str(tmp_path / "fig")]) == 2  # no log: a clear error


def test_a_run_is_labelled_like_its_leaderboard_row(tmp_path):
    """Every override names the run (not a hard-coded list of PTM's ablation keys), as in the tables."""
    from mddbench.report.figures import run_label

    (tmp_path / "job.json").write_text(json.dumps({"method": "mtt", "hparams": [["syn_steps", 30]],
                                                   "time_budget": 60.0}))
    assert run_label(tmp_path) == "mtt (syn_steps=30, 60 s budget)"
