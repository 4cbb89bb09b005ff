"""Leaderboards from hand-built records whose cells were computed by hand."""
from __future__ import annotations

import math
import random
import shutil

import pandas as pd
import pytest

from mddbench.errors import ConfigError
from mddbench.report.leaderboard import (
    PAPER_RESULTS,
    cross_arch_table,
    format_pm,
    main_table,
    pairwise_table,
    pool,
    reported_vs_reproduced,
    tidy,
    write_leaderboards,
)

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


def test_one_seed_cells_are_unranked_and_real_never_competes(records):
    df = main_table(records, budget="quick", bold=True)
    col = df["breastmnist ipc1"]
    # dc and tinydd (one seed each) cannot be tested: shown unranked, never tying, although their means are above
    # dm's, the only cell with two seeds, which is the lone contender and ties
    assert col["dc"] == "70.00 ± 10.00 (n=2, 1 seed)"
    assert col["tinydd"] == "70.00 ± 0.00 (n=2, 1 seed)"
    assert col["dm"] == "≈ 65.00 ± 11.18 [-62.1, 192.1] (n=4, 2 seeds)"  # seed means 55, 75: 10 * t(.975, 1)
    assert col["real"] == "85.00 ± 5.00 (n=2, 1 seed)"
    # a column of one-seed cells has no verdict at all; the plain table (CSV) has neither marks nor intervals
    assert df.loc["datm (soft labels)", "breastmnist ipc10"] == "76.00 ± 1.00 (n=2, 1 seed)"
    assert df.loc["dc", "pathmnist ipc2"] == "59.00 ± 1.00 (n=2, 1 seed)"
    plain = "".join(main_table(records, budget="quick").to_numpy().ravel())
    assert "**" not in plain and "≈" not in plain and "seed" not in plain


def test_balanced_accuracy_table(records):
    df = main_table(records, metric="balanced_acc", budget="quick", bold=True)
    assert df.loc["dc", "breastmnist ipc1"] == "60.00 ± 5.00 (n=2, 1 seed)"
    assert df.loc["dm", "breastmnist ipc1"] == "≈ 40.00 ± 0.00 [40.0, 40.0] (n=4, 2 seeds)"


def test_balanced_accuracy_beside_accuracy_where_the_majority_dominates(records):
    # breastmnist's test split is 114/156 benign; pathmnist's counts are not listed, so it gets no column
    df = main_table(records, budget="quick", balanced_beside=True)
    assert list(df.columns) == ["pathmnist ipc2", "breastmnist ipc1", "breastmnist ipc1 bal. acc",
                                "breastmnist ipc10", "breastmnist ipc10 bal. acc"]
    assert df.loc["dc", "breastmnist ipc1 bal. acc"] == "60.00 ± 5.00 (n=2)"
    assert df.loc["dc", "breastmnist ipc1"] == "70.00 ± 10.00 (n=2)"


def seeded(method: str, seed_values: list[list[float]], dataset: str = "breastmnist", ipc=2, **kw) -> list[dict]:
    return [rec(method, dataset, ipc, v, seed=s, **kw) for s, v in enumerate(seed_values)]


def test_significantly_best_is_bold_with_its_interval():
    records = (seeded("mtt", [[0.81, 0.82], [0.82, 0.83], [0.81, 0.82]])
               + seeded("dc", [[0.60, 0.62], [0.64, 0.62], [0.61, 0.61]]))
    col = main_table(records, bold=True)["breastmnist ipc2"]
    # seed means 81.5, 82.5, 81.5: sd 0.577, t(.975, 2) = 4.303, half-width 1.434
    assert col["mtt"] == "**81.83 ± 0.69** [80.4, 83.3] (n=6, 3 seeds)"
    assert col["dc"] == "61.67 ± 1.25 [58.8, 64.5] (n=6, 3 seeds)"  # significantly below: no mark


def test_best_inside_the_spread_ties():
    # mtt's seed means 70, 80, 60 against dc's 68, 72, 66: mtt's mean is higher, the difference is noise
    records = (seeded("mtt", [[0.70, 0.70], [0.80, 0.80], [0.60, 0.60]])
               + seeded("dc", [[0.68, 0.68], [0.72, 0.72], [0.66, 0.66]])
               + seeded("random", [[0.20, 0.20], [0.21, 0.21], [0.22, 0.22]]))
    col = main_table(records, bold=True)["breastmnist ipc2"]
    assert col["mtt"].startswith("≈ 70.00 ± 8.16") and col["dc"].startswith("≈ 68.67 ± 2.49")
    # significantly below the best even after Holm (p = 0.0129, x 2 comparisons = 0.026): not in the tie
    assert col["random"].startswith("21.00")


def test_holm_correction_can_turn_a_win_into_a_tie():
    # mtt against random alone: Welch p = 0.036 < 0.05, so mtt is significantly best; with dc in the column
    # (p = 0.84) Holm multiplies the smaller p by 2 (0.073), and random joins the tie
    mtt, random = seeded("mtt", [[0.70], [0.80], [0.60]]), seeded("random", [[0.40], [0.41], [0.42]])
    dc = seeded("dc", [[0.68], [0.72], [0.66]])
    assert main_table(mtt + random, bold=True)["breastmnist ipc2"]["mtt"].startswith("**70.00")
    col = main_table(mtt + random + dc, bold=True)["breastmnist ipc2"]
    assert col["random"].startswith("≈ 41.00") and col["mtt"].startswith("≈ 70.00")


def test_welch_and_interval_match_hand_values():
    from mddbench.report.significance import holm, t_interval, verdict, welch_p

    # t = -3 / sqrt(2/3) = -3.674 with 4 degrees of freedom (equal variances): p = 0.0213
    assert welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.02131, abs=1e-4)
    assert math.isnan(welch_p([1], [4, 5, 6]))
    assert welch_p([1, 1], [2, 2]) == 0.0 and welch_p([1, 1], [1, 1]) == 1.0
    assert t_interval([1.0]) is None
    lo, hi = t_interval([1.0, 2.0, 3.0])  # 2 +- 4.303 * 1 / sqrt(3)
    assert (lo, hi) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-3)
    v = verdict({"a": 5.0, "b": 2.0, "c": 1.9}, {"a": [5, 5.1, 4.9], "b": [2, 2.1, 1.9], "c": [1.9]})
    assert (v.best, v.significant, v.tied) == ("a", True, frozenset())  # c has one seed: not a contender
    one = verdict({"a": 5.0, "c": 9.0}, {"a": [5, 5.1, 4.9], "c": [9.0]})  # a higher one-seed cell never wins
    assert (one.best, one.significant, one.tied) == ("a", False, frozenset({"a"}))
    # Holm by hand: sorted p 0.01, 0.02, 0.04 -> 0.03, max(0.04, 0.03), max(0.04, 0.04); nan is not counted
    assert holm({"x": 0.02, "y": 0.01, "z": 0.04, "w": math.nan}) == pytest.approx(
        {"x": 0.04, "y": 0.03, "z": 0.04, "w": math.nan}, nan_ok=True)
    assert holm({"x": 0.6, "y": 0.5}) == {"x": 1.0, "y": 1.0}  # 0.5 x 2 = 1; 0.6 x 1 < 1: the running maximum
    lone = verdict({"a": 5.0}, {"a": [5, 5.1, 4.9]})  # a column with one contender: nothing tested, so a tie
    assert (lone.best, lone.significant, lone.tied) == ("a", False, frozenset({"a"}))


def test_pairwise_table_gives_every_two_rows_their_welch_p():
    # seed means: mtt 1, 2, 3 and dc 4, 5, 6 (p = 0.0213 by hand, above); random one seed; real spreads in
    records = (seeded("mtt", [[0.01, 0.01], [0.02, 0.02], [0.03, 0.03]])
               + seeded("dc", [[0.04, 0.04], [0.05, 0.05], [0.06, 0.06]])
               + [dict(r, overrides={"lr": 1}) for r in seeded("dc", [[0.09], [0.09]])]
               + [dict(r, time_budget=t, job_id=f"{r['job_id']}t") for r, t in
                  zip(seeded("mtt", [[0.07], [0.08]]), (60.0, 70.5))]  # time-matched: one row, two budgets
               + [rec("random", "breastmnist", 2, [0.01]), rec("real", "breastmnist", "full", [0.9, 0.8]),
                  rec("dc", "breastmnist", 10, [0.99])])
    table = pairwise_table(records, "breastmnist", 2)
    assert list(table.index) == ["real", "dc [lr=1]", "mtt [time budget]", "dc", "mtt", "random"]  # best mean first
    assert table.loc["mtt [time budget]", "seed means"] == "7.0 8.0"  # pooled across the seeds' own budgets
    assert table.loc["dc", "mean"] == 5.0 and table.loc["dc", "seeds"] == 3 and table.loc["dc", "seed means"] == "4.0 5.0 6.0"
    # Holm over the 6 pairs of the 4 rows with two seeds or more; raw Welch p, smallest first: mtt [time budget]
    # vs mtt 0.0063, dc [lr=1] vs mtt 0.0067, dc vs dc [lr=1] 0.0202 (t = 4 / (1 / sqrt 3), 2 df), dc vs mtt
    # 0.0213 (above), dc vs mtt [time budget] 0.0494, dc [lr=1] vs mtt [time budget] 0.2048; times 6, 5, 4, 3,
    # 2, 1 with a running maximum: 0.0378, 0.0378, 0.0808, 0.0808, 0.0988, 0.2048
    assert table.loc["dc", "p vs mtt"] == pytest.approx(0.081, abs=1e-3) == table.loc["mtt", "p vs dc"]
    assert table.loc["dc", "p vs dc [lr=1]"] == pytest.approx(0.081, abs=1e-3)
    assert table.loc["mtt", "p vs mtt [time budget]"] == pytest.approx(0.038, abs=1e-3)
    assert table.loc["dc", "p vs mtt [time budget]"] == pytest.approx(0.099, abs=1e-3)
    assert math.isnan(table.loc["mtt", "p vs random"]) and math.isnan(table.loc["mtt", "p vs mtt"])
    assert math.isnan(table.loc["real", "p vs dc"])  # real has one seed here
    with pytest.raises(ConfigError, match="no test_acc records"):
        pairwise_table(records, "pathmnist", 2)


def test_cells_whose_sets_never_updated_say_so():
    records = seeded("datm", [[0.73, 0.73], [0.60, 0.62], [0.73, 0.73]], label_type="soft")
    records[0]["updates"], records[1]["updates"], records[2]["updates"] = 0, 16, 0
    frozen = [dict(r, updates=0, job_id=r["job_id"] + "f", method="seqmatch", label_type="hard") for r in records]
    df = main_table(records + frozen, bold=True)
    assert df.loc["datm (soft labels)", "breastmnist ipc2"].endswith("(n=6, 3 seeds, 2 of 3 seeds never updated)")
    assert df.loc["seqmatch", "breastmnist ipc2"].endswith("(n=6, 3 seeds, never updated)")
    # 414 / 6; sqrt(194 / 6)
    assert main_table(frozen).loc["seqmatch", "breastmnist ipc2"] == "69.00 ± 5.69 (n=6, never updated)"


def test_budget_versions_are_never_pooled(tmp_path):
    old = seeded("dc", [[0.60, 0.60]])  # no budget_version: version 1
    new = [dict(r, budget_version=2, job_id=r["job_id"] + "v2") for r in seeded("dc", [[0.80, 0.80]])]
    with pytest.raises(ConfigError, match=r"quick, quick_v2\); choose one \(--budget on the command line"):
        main_table(old + new)
    assert main_table(old + new, budget="quick_v2").loc["dc", "breastmnist ipc2"] == "80.00 ± 0.00 (n=2)"
    assert main_table(old + new, budget="quick").loc["dc", "breastmnist ipc2"] == "60.00 ± 0.00 (n=2)"
    names = {p.name for p in write_leaderboards(old + new, tmp_path)}
    assert {"main_quick.md", "main_quick_v2.md", "main_quick_v2_balanced_acc.csv"} <= names
    assert tidy(old + new)["budget_version"].tolist() == [1, 2]


def test_3d_sets_get_a_main_table_of_their_own(tmp_path):
    """A 2D and a 3D dataset are not columns of one table (the 3D one sorted first by name and pushed the 2D
    lead table aside); records without ``dims`` are 2D."""
    flat = seeded("dc", [[0.60, 0.60]])
    volumes = [dict(r, dataset="adrenalmnist3d", ipc=1, dims=3, job_id=r["job_id"] + "3d")
               for r in seeded("dc", [[0.70, 0.70]])]
    names = {p.name for p in write_leaderboards(flat + volumes, tmp_path)}
    assert {"main_quick.md", "main_quick_balanced_acc.md", "main_quick_3d.md", "main_quick_3d_balanced_acc.md",
            "main_quick_3d.csv"} <= names
    two, three = (tmp_path / "main_quick.md").read_text(), (tmp_path / "main_quick_3d.md").read_text()
    assert "breastmnist ipc2" in two and "adrenalmnist3d" not in two
    assert three.startswith("# Main leaderboard (3D volumes): test accuracy (%), ConvNet\n")
    assert "adrenalmnist3d ipc1" in three and "breastmnist" not in three and "70.00 ± 0.00" in three
    assert not [p.name for p in write_leaderboards(flat, tmp_path / "flat") if "_3d" in p.name]


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
    assert df.loc["mtt", "pathmnist alexnet"] == "80.00 ± 10.00 (n=2, 1 seed, 1 diverged)"
    assert df.loc["ftd", "pathmnist alexnet"] == "diverged (2/2)"
    assert df.loc["dc", "pathmnist alexnet"] == "60.00 ± 0.00 (n=2, 1 seed)"  # one seed: unranked
    rows = tidy(records).set_index("method")
    assert rows.loc["mtt", "diverged"] == 1 and rows.loc["ftd", "diverged"] == 2 and rows.loc["ftd", "test_acc_n"] == 0


def _failure(record: dict, seed: int, job_id: str | None = None, **fields) -> dict:
    """The failure a diverged seed of ``record``'s cell leaves (mddbench.results.failures.failure_record's fields)."""
    job = job_id or f"failed{next(_counter)}"
    return {"id": job, "job_id": job, "method": record["method"], "label_type": record["label_type"],
            "dataset": record["dataset"], "dims": 2, "ipc": record["ipc"], "seed": seed, "eval_models": ["convnet"],
            "protocol": "v1", "budget": record["budget"], "budget_version": 1, "overrides": {}, "time_budget": None,
            "reason": "distillation diverged", "message": "mtt diverged at iteration 3", **fields}


def test_a_seed_lost_to_a_diverged_distillation_is_named_in_its_cell_and_the_cell_does_not_compete(tmp_path):
    from mddbench.results.failures import lost

    mtt = [rec("mtt", "pneumoniamnist", 10, [0.90, 0.92], seed=s) for s in (0, 1)]
    dm = [rec("dm", "pneumoniamnist", 10, [0.80 + 0.01 * s, 0.82], seed=s) for s in (0, 1, 2)]
    rnd = [rec("random", "pneumoniamnist", 10, [0.50 + 0.01 * s, 0.52], seed=s) for s in (0, 1, 2)]
    records = mtt + dm + rnd
    ftd = rec("ftd", "pneumoniamnist", 10, [0.5])  # a method every seed of which diverged: a row of its own
    dc = [rec("dc", "pneumoniamnist", 10, [0.70 + 0.01 * s, 0.70], seed=s) for s in (0, 1, 2)]
    failures = [_failure(mtt[0], 2), _failure(ftd, 0), _failure(ftd, 1),
                _failure(dc[0], 0, job_id=dc[0]["job_id"])]  # dc seed 0 failed once, and succeeded when rerun
    records += dc
    table = main_table(records, budget="quick", bold=True, lost=lost(failures, records))
    col = "pneumoniamnist ipc10"
    # the best mean (mtt, 91.0 over its two surviving seeds) is no contender: dm is significantly best
    assert table.loc["mtt", col] == "91.00 ± 1.00 [91.0, 91.0] (n=4, 2 seeds, 1 of 3 seeds diverged in distillation)"
    assert table.loc["dm", col].startswith("**81.50 ± ")
    assert table.loc["ftd", col] == "distillation diverged (2 of 2 seeds)"
    assert "diverged" not in table.loc["dc", col] and table.loc["dc", col].endswith("(n=6, 3 seeds)")
    plain = main_table(records, budget="quick", lost=lost(failures, records))
    assert plain.loc["mtt", col] == "91.00 ± 1.00 (n=4, 1 of 3 seeds diverged in distillation)"
    # without the failures the survivors' mean would win the column: the failures are what stops it
    assert main_table(records, budget="quick", bold=True).loc["mtt", col].startswith("**91.00")
    # a failure of another budget never marks this one's cells
    other = _failure({**mtt[0], "budget": "smoke"}, 2)
    assert "diverged" not in main_table(records, budget="quick", lost=lost([other], records)).loc["mtt", col]
    write_leaderboards(records, tmp_path, failures=failures)
    md = (tmp_path / "main_quick.md").read_text()
    assert "1 of 3 seeds diverged in distillation" in md
    assert " and 3 failures (`failures.jsonl`); " in md  # dc's superseded failure is not counted


def test_a_table_every_job_of_which_diverged_is_written_and_says_so(tmp_path):
    """A 3D sweep (or a budget) whose every job diverged leaves only failures: its table is still written, its
    cells naming the lost seeds, instead of no table and the failures visible only in failures.jsonl."""
    flat = [rec("dc", "pneumoniamnist", 2, [0.70, 0.72], seed=s) for s in (0, 1)]
    volume = dict(rec("dc", "adrenalmnist3d", 1, [0.5]), dims=3)
    failures = [_failure(volume, s, dims=3) for s in (0, 1)]
    failures.append(_failure(rec("mtt", "pneumoniamnist", 2, [0.5], budget="smoke"), 0))
    names = {p.name for p in write_leaderboards(flat, tmp_path, failures=failures)}
    assert {"main_quick.md", "main_quick_3d.md", "main_quick_3d_balanced_acc.md", "main_smoke.md"} <= names
    three = (tmp_path / "main_quick_3d.md").read_text()
    assert "| dc       | distillation diverged (2 of 2 seeds) | distillation diverged (2 of 2 seeds) |" in three
    assert "adrenalmnist3d ipc1 bal. acc" in three and "pneumoniamnist" not in three  # 76.8 % majority: bal. acc
    assert "distillation diverged (1 of 1 seeds)" in (tmp_path / "main_smoke.md").read_text()
    assert "diverged" not in (tmp_path / "main_quick.md").read_text().split("| method")[1]
    # the provenance counts what the cells stand on: no records, but failures (not "from 0 records")
    assert "from 0 records and 2 failures (`failures.jsonl`); never edited" in three
    assert "from 0 records and 1 failure (`failures.jsonl`); never edited" in (tmp_path / "main_smoke.md").read_text()
    assert "from 2 records; never edited" in (tmp_path / "main_quick.md").read_text()


def test_a_time_matched_run_lost_to_divergence_counts_as_one_run_of_its_cell():
    from mddbench.report.leaderboard import variants_table
    from mddbench.results.failures import lost

    matched = [dict(rec("mtt", "breastmnist", 2, [0.6], seed=s), time_budget=t) for s in (0, 1) for t in (60.0, 120.0)]
    default = [rec("mtt", "breastmnist", 2, [0.5], seed=s) for s in (0, 1)]
    failure = _failure(dict(matched[0], time_budget=30.0), 2, time_budget=30.0)
    records = matched + default
    table = variants_table(records, budget="quick", lost=lost([failure], records))
    cell = table.loc["mtt [time budget]", "breastmnist ipc2"]
    assert cell == "60.00 ± 0.00 (n=4, 1 of 5 runs diverged in distillation) [30 s, 60 s, 120 s]"


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
    assert "70.00 ± 10.00 (n=2, 1 seed)" in md and "datm (soft labels)" in md
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
    from mddbench.report.leaderboard import variants_table
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


def test_provenance_names_the_runs_when_a_run_has_records_on_several_networks(tmp_path):
    # one DM run evaluated on ConvNet and LeNet is two records of one run; a DC run is one of one
    dm = rec("dm", "breastmnist", 1, [0.5])
    records = [dm, dict(rec("dm", "breastmnist", 1, [0.4], eval_model="lenet"), job_id=dm["job_id"]),
               rec("dc", "breastmnist", 1, [0.6])]
    write_leaderboards(records, tmp_path)
    cross = (tmp_path / "cross_arch_quick.md").read_text()
    assert "from 3 records of 2 runs (one record per run and evaluation network); never edited" in cross
    # the ConvNet table's records are one per run, so it names no runs
    assert "from 2 records; never edited" in (tmp_path / "main_quick.md").read_text()
