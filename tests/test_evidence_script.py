"""scripts/ptm_evidence.sh, the recipe (docs/reproducing.md) for PTM against MTT and FTD at equal time and for the
accuracy-against-time curves, runs as written (at the smoke budget, on the generated demo set)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_script

from mddbench.results.store import ResultStore

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ptm_evidence.sh"


@pytest.mark.slow
def test_equal_time_runs_and_curves_take_their_budgets_from_the_ptm_run_they_follow(tmp_path):
    out, curves = tmp_path / "out", tmp_path / "curves"
    done = run_script(SCRIPT, tmp_path / "data", out, curves, DATASETS="demo", IPCS="2", PARTS="match curves",
                      POINTS="2", BUDGET="smoke", SNAPSHOT_EVERY="1", CURVE_EPOCHS="20")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def by_method(store):
        return {r["method"]: r for r in ResultStore(store / "results.sqlite").records()}

    matched, curved = by_method(out), by_method(curves)
    assert set(matched) == {"ptm", "mtt", "ftd"} and set(curved) == {"ptm", "ftd"}
    assert not matched["ptm"].get("time_budget") and not curved["ptm"].get("time_budget")
    # equal time: MTT and FTD get the default PTM run's time; the curve's FTD six times the curve's own PTM's
    t = round(matched["ptm"]["distill_seconds"], 1)
    assert matched["mtt"]["time_budget"] == pytest.approx(t) and matched["ftd"]["time_budget"] == pytest.approx(t)
    assert curved["ftd"]["time_budget"] == pytest.approx(6 * round(curved["ptm"]["distill_seconds"], 1))
    for method in ("ptm", "ftd"):
        (run,) = (curves / "runs").glob(f"{method}_demo_ipc2_*")
        points = json.loads((run / "curve.json").read_text())
        assert len(points) == 2 and all(0 <= p["test_acc"] <= 1 for p in points)
    assert (curves / "figures_demo_ipc2" / "fig3a_accuracy_vs_time.png").stat().st_size > 0
