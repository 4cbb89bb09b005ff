"""Leaderboards from hand-built records whose cells were computed by hand."""
from __future__ import annotations

import random
import shutil

import pandas as pd
import pytest

from mddbench.errors import ConfigError
from mddbench.leaderboard import (PAPER_RESULTS, cross_arch_table, format_pm, main_table, pool,
                                  reported_vs_reproduced, tidy, write_leaderboards)

_counter = iter(range(10**6))


def rec(method: str, dataset: str, ipc, values: list[float], seed: int = 0, eval_model: str = "convnet",
        budget: str = "quick", label_type: str = "hard", balanced: list[float] | None = None) -> dict:
    def stat(v: list[float]) -> dict:
        return {"per_model": v, "mean": sum(v) / len(v), "std": 0.0, "n": len(v)}
    other = stat([0.5] * len(values))
    return {"job_id": f"job{next(_counter)}", "method": method, "dataset": dataset, "ipc": ipc,
            "eval_model": eval_model, "protocol": "v1", "budget": budget, "seed": seed, "label_type": label_type,
            "resolution": 28, "distill_seconds": 1.5, "peak_memory_mb": 100.0, "created": f"2024-01-0{seed + 1}",
            "metrics": {"test_acc": stat(values), "val_acc": other, "auc": other,
                        "balanced_acc": stat(balanced or values)}}


@pytest.fixture
def records() -> list[dict]:
    return [
        rec("real", "breastmnist", "full", [0.90, 0.80]),
        rec("dm", "breastmnist", 1, [0.50, 0.60], seed=0, balanced=[0.40, 0.40]),
        rec("dm", "breastmnist", 1, [0.70, 0.80], seed=1, balanced=[0.40, 0.40]),
        rec("tinydd", "breastmnist", 1, [0.70, 0.70], balanced=[0.45, 0.45]),
        rec("dc", "breastmnist", 1, [0.60, 0.80], balanced=[0.55, 0.65]),
        rec("random", "breastmnist", 1, [0.60], balanced=[0.50]),
        rec("datm", "breastmnist", 10, [0.75, 0.77], label_type="soft"),
        rec("dm", "breastmnist", 10, [0.60]),
        rec("dc", "pathmnist", 2, [0.58, 0.60]),
        rec("dc", "pathmnist", 2, [0.40, 0.50], eval_model="lenet"),
        rec("real", "pathmnist", "full", [0.88, 0.90], eval_model="lenet"),
        rec("dm", "pathmnist", 2, [0.30], budget="smoke"),
    ]


def quick(records: list[dict]) -> list[dict]:
    return [r for r in records if r["budget"] == "quick"]


def test_pool_and_format():
    stat = pool([rec("dm", "d", 1, [0.5, 0.6]), rec("dm", "d", 1, [0.7, 0.8])])
    assert stat.n == 4
    assert format_pm(stat.mean, stat.std) == "65.00 ± 11.18"  # std = sqrt(125), ddof=0
    assert format_pm(57.63, 0.01 * 100) == "57.63 ± 1.00"


def test_main_table_cells_rows_and_columns(records):
    df = main_table(records, budget="quick")
    assert list(df.columns) == ["pathmnist ipc2", "breastmnist ipc1", "breastmnist ipc10"]
    assert list(df.index) == ["random", "dc", "dm", "datm (soft labels)", "tinydd", "real"]
    assert df.loc["dm", "breastmnist ipc1"] == "65.00 ± 11.18 (n=4)"  # seeds 0 and 1 pooled
    assert df.loc["dm", "breastmnist ipc10"] == "60.00 ± 0.00 (n=1)"
    assert df.loc["dc", "breastmnist ipc1"] == "70.00 ± 10.00 (n=2)"
    assert df.loc["datm (soft labels)", "breastmnist ipc10"] == "76.00 ± 1.00 (n=2)"
    assert df.loc["dc", "pathmnist ipc2"] == "59.00 ± 1.00 (n=2)"
    assert df.loc["datm (soft labels)", "breastmnist ipc1"] == ""
    # `real` is repeated in every ipc column of its dataset; lenet records are not in a convnet table
    assert df.loc["real", "breastmnist ipc1"] == df.loc["real", "breastmnist ipc10"] == "85.00 ± 5.00 (n=2)"
    assert df.loc["real", "pathmnist ipc2"] == ""


def test_bold_marks_best_ties_and_never_real(records):
    df = main_table(records, budget="quick", bold=True)
    col = df["breastmnist ipc1"]
    # dc, dm and tinydd tie at 70.00 / 65.00 / 70.00: both 70.00s are bold; real (85) is not
    assert col["dc"] == "**70.00 ± 10.00** (n=2)"
    assert col["tinydd"] == "**70.00 ± 0.00** (n=2)"
    assert col["dm"] == "65.00 ± 11.18 (n=4)"
    assert col["real"] == "85.00 ± 5.00 (n=2)"
    assert df.loc["datm (soft labels)", "breastmnist ipc10"] == "**76.00 ± 1.00** (n=2)"
    assert "**" not in "".join(main_table(records, budget="quick").to_numpy().ravel())


def test_balanced_accuracy_table(records):
    df = main_table(records, metric="balanced_acc", budget="quick", bold=True)
    assert df.loc["dc", "breastmnist ipc1"] == "**60.00 ± 5.00** (n=2)"
    assert df.loc["dm", "breastmnist ipc1"] == "40.00 ± 0.00 (n=4)"


def test_mixed_budgets_need_a_choice(records):
    with pytest.raises(ConfigError, match="budget"):
        main_table(records)
    assert list(main_table(records, budget="smoke").index) == ["dm"]
    with pytest.raises(ConfigError, match="metric"):
        main_table(records, metric="acc", budget="quick")


def test_cross_arch_table(records):
    df = cross_arch_table(records, ipc=2, budget="quick")
    assert list(df.columns) == ["pathmnist convnet", "pathmnist lenet"]
    assert list(df.index) == ["dc", "real"]
    assert df.loc["dc", "pathmnist lenet"] == "45.00 ± 5.00 (n=2)"
    assert df.loc["real", "pathmnist lenet"] == "89.00 ± 1.00 (n=2)"
    assert df.loc["real", "pathmnist convnet"] == ""


def test_diverged_models_are_shown_never_averaged_and_never_bold():
    def diverging(method: str, values: list) -> dict:
        r = rec(method, "pathmnist", 2, [0.5] * len(values), eval_model="alexnet")
        scored = [v for v in values if v is not None]
        r["metrics"]["test_acc"] = {"per_model": values, "mean": sum(scored) / len(scored) if scored else None,
                                    "std": 0.0, "n": len(scored), "diverged": len(values) - len(scored)}
        return r
    records = [diverging("mtt", [0.9, None, 0.7]), diverging("ftd", [None, None]), diverging("dc", [0.6, 0.6])]
    df = cross_arch_table(records, ipc=2, budget="quick", bold=True)
    assert df.loc["mtt", "pathmnist alexnet"] == "80.00 ± 10.00 (n=2, 1 diverged)"
    assert df.loc["ftd", "pathmnist alexnet"] == "diverged (2/2)"
    assert df.loc["dc", "pathmnist alexnet"] == "**60.00 ± 0.00** (n=2)"
    rows = tidy(records).set_index("method")
    assert rows.loc["mtt", "diverged"] == 1 and rows.loc["ftd", "diverged"] == 2 and rows.loc["ftd", "test_acc_n"] == 0


def test_reported_vs_reproduced(records):
    paper = pd.read_csv(PAPER_RESULTS)
    df = reported_vs_reproduced(quick(records))
    dc = df[(df.dataset == "pathmnist") & (df.ipc == "2") & (df.method == "dc") & (df.eval_model == "convnet")]
    assert dc[["table", "reported", "reproduced", "difference", "budget"]].values.tolist() == [
        ["2", "57.63 ± 1.00", "59.00 ± 1.00 (n=2)", "+1.37", "quick"]]
    lenet = df[(df.dataset == "pathmnist") & (df.method == "dc") & (df.eval_model == "lenet")].iloc[0]
    assert (lenet.reported, lenet.reproduced, lenet.difference) == ("44.35 ± 3.00", "45.00 ± 5.00 (n=2)", "+0.65")
    real = df[(df.dataset == "pathmnist") & (df.method == "real")].iloc[0]
    assert (real.reported, real.reproduced, real.difference) == ("88.48 ± 2.00", "not run", "")
    # every paper row appears once (nothing of ours doubles them), then what only we ran
    assert (df.table != "").sum() == len(paper)
    extra = df[df.table == ""]
    assert set(extra.reported) == {"not reported"}
    assert set(zip(extra.dataset, extra.method)) == {("breastmnist", m) for m in
                                                     ("real", "dm", "tinydd", "dc", "random", "datm")} | {
        ("pathmnist", "real")}
    assert extra[extra.method == "datm"].label_type.tolist() == ["soft"]


def test_tidy_one_row_per_record(records):
    df = tidy(records)
    assert len(df) == len(records)
    row = df[(df.method == "dc") & (df.dataset == "pathmnist") & (df.eval_model == "convnet")].iloc[0]
    assert (row.test_acc_mean, row.test_acc_std, row.test_acc_n, row.val_acc_mean) == (59.0, 1.0, 2, 50.0)
    assert row.seed == 0 and row.label_type == "hard" and row.distill_seconds == 1.5


def test_write_leaderboards_files_and_byte_identical_regeneration(records, tmp_path):
    paths = write_leaderboards(records, tmp_path / "a")
    names = sorted(p.name for p in paths)
    assert names == sorted(["main_quick.csv", "main_quick.md", "main_quick_balanced_acc.csv",
                            "main_quick_balanced_acc.md", "cross_arch_quick.csv", "cross_arch_quick.md",
                            "main_smoke.csv", "main_smoke.md", "main_smoke_balanced_acc.csv",
                            "main_smoke_balanced_acc.md", "reported_vs_reproduced.csv",
                            "reported_vs_reproduced.md", "records.csv"])
    md = (tmp_path / "a" / "main_quick.md").read_text()
    assert md.startswith("# Main leaderboard: test accuracy (%), ConvNet\n")
    assert "Protocol `v1`, budget `quick`" in md
    assert "Generated by `mddbench leaderboard` from 9 records; never edited by hand" in md
    assert "**70.00 ± 10.00** (n=2)" in md and "datm (soft labels)" in md
    rvr = (tmp_path / "a" / "reported_vs_reproduced.md").read_text()
    assert "budget(s): `quick`, `smoke`. `quick`, `smoke` are smaller than the paper's full protocol" in rvr

    shuffled = [dict(r, created="2099-12-31") for r in records]  # new timestamps, another order
    random.Random(0).shuffle(shuffled)
    write_leaderboards(shuffled, tmp_path / "b")
    for p in paths:
        assert (tmp_path / "b" / p.name).read_bytes() == p.read_bytes(), p.name


def test_tables_say_when_their_records_ran_on_different_devices(tmp_path):
    one = [dict(rec("dm", "breastmnist", 1, [0.5]), device="cpu"),
           dict(rec("dc", "breastmnist", 1, [0.6]), device="cpu")]
    write_leaderboards(one, tmp_path / "one")
    assert "from 2 records; never edited" in (tmp_path / "one" / "main_quick.md").read_text()
    mixed = one + [dict(rec("dm", "breastmnist", 1, [0.7], seed=1), device="cuda:0")]
    write_leaderboards(mixed, tmp_path / "mixed")
    assert "from 3 records (run on: cpu 2, cuda 1;" in (tmp_path / "mixed" / "main_quick.md").read_text()
    assert tidy(mixed).device.tolist() == ["cpu", "cpu", "cuda:0"]


def test_shipped_paper_csv_is_the_default(tmp_path, records):
    assert PAPER_RESULTS.is_file() and PAPER_RESULTS.parent.name == "mddbench"
    copy = tmp_path / "paper.csv"
    shutil.copy(PAPER_RESULTS, copy)
    assert reported_vs_reproduced(records, copy).equals(reported_vs_reproduced(records))


def test_variants_get_their_own_rows_and_never_pool_into_the_main_table(tmp_path):
    base = rec("ptm", "breastmnist", 2, [0.70, 0.80])
    ablation = dict(rec("ptm", "breastmnist", 2, [0.50, 0.50]), overrides={"overlap": "false"})
    timed = dict(rec("mtt", "breastmnist", 2, [0.60, 0.60]), time_budget=120.0)
    timed_other_cell = dict(rec("mtt", "breastmnist", 10, [0.90]), time_budget=300.0)
    plain_mtt = rec("mtt", "breastmnist", 2, [0.40, 0.40])
    records = [base, ablation, timed, timed_other_cell, plain_mtt, rec("random", "breastmnist", 2, [0.55])]
    main = main_table([r for r in records if not (r.get("overrides") or r.get("time_budget"))])
    assert main.loc["ptm", "breastmnist ipc2"] == "75.00 ± 5.00 (n=2)"
    from mddbench.leaderboard import variants_table
    var = variants_table(records)
    # time-matched runs share one row; each cell names its own budget
    assert list(var.index) == ["random", "mtt", "mtt [time budget]", "ptm", "ptm [overlap=false]"]
    assert var.loc["ptm [overlap=false]", "breastmnist ipc2"] == "50.00 ± 0.00 (n=2)"
    assert var.loc["mtt [time budget]", "breastmnist ipc2"] == "60.00 ± 0.00 (n=2) [120 s]"
    assert var.loc["mtt [time budget]", "breastmnist ipc10"] == "90.00 ± 0.00 (n=1) [300 s]"
    assert var.loc["mtt", "breastmnist ipc10"] == ""
    paths = {p.name for p in write_leaderboards(records, tmp_path)}
    assert "variants_quick.md" in paths
    text = (tmp_path / "main_quick.md").read_text()
    assert "overlap" not in text and "75.00 ± 5.00" in text and "40.00 ± 0.00" in text and "60.00" not in text
    assert (tmp_path / "records.csv").read_text().count("overlap=false") == 1
