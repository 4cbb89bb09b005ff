"""scripts/gpu_leaderboard.sh, the one prepared script a lent GPU runs, works before a GPU ever sees it.

A session is lent a GPU for 15 minutes in all: a script that breaks there (a renamed flag, a stage that
exits on the first failed cell, tables that do not render) wastes the only chance. This runs it as written,
on the CPU at the smoke budget, on the genuine BREAST-ULS, RetinaMNIST and AdrenalMNIST3D files.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, needs_data, run_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_leaderboard.sh"


@pytest.mark.slow
@needs_data("retinamnist.npz", "adrenalmnist3d.npz", "breast-uls_112.npz")
def test_the_gpu_script_runs_every_stage_and_renders_its_tables(tmp_path):
    out = tmp_path / "gpu"
    done = run_script(SCRIPT, SHARED_DATA, out, DEVICE="cpu", BUDGET2D="smoke", BUDGET3D="smoke", METHODS3D="random",
                      METHODS_RETINA="ptm",
                      SEEDS3D="0", RETINA_S="900", ADRENAL_S="900", BUDGET_BUSI="smoke", METHODS_BUSI="random",
                      BUSI_S="900")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in ("breast-uls ipc 2, smoke", "retinamnist ipc 2, smoke", "adrenalmnist3d ipc 1, smoke"):
        assert f"== {stage}: exit 0" in done.stdout, done.stdout[-3000:]
    records = [json.loads(line) for line in (out / "leaderboards" / "records.jsonl").read_text().splitlines()]
    cells = {(r["method"], r["dataset"], r["ipc"], r["budget"], r["device"]) for r in records}
    assert cells == {("ptm", "retinamnist", 2, "smoke", "cpu")} | {
        ("random", "adrenalmnist3d", 1, "smoke", "cpu"), ("random", "breast-uls", 2, "smoke", "cpu")}
    assert all(r["seed"] == 0 and r["metrics"]["test_acc"]["n"] == 2 for r in records)
    tables = {p.name for p in (out / "leaderboards").glob("*.md")}
    assert {"main_smoke.md", "main_smoke_3d.md"} <= tables, tables
