"""The privacy audit: near copies, membership attacks, the store, the table, the figure, bad input."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_curve

from mddbench.api.synset import SyntheticSet
from mddbench.cli import main
from mddbench.data.dataset import RealData, get_spec, load_dataset
from mddbench.errors import ArtifactError, ConfigError, DataError
from mddbench.evaluation.protocol import EvalConfig
from mddbench.privacy.audit import (
    PRIVACY_VERSION,
    PrivacyConfig,
    audit,
    audit_artifact,
    load_for_audit,
    set_distance_attack,
    summary_lines,
)
from mddbench.privacy.membership import attack_metrics, tpr_at_fpr
from mddbench.privacy.memorisation import flat, near_copies, standardized
from mddbench.report.privacy_figure import figure_pairs, figure_space, nearest_figure
from mddbench.report.privacy_leaderboard import privacy_table, write_privacy_leaderboard
from mddbench.results.privacy_store import PrivacyStore
from mddbench.results.store import ResultStore, artifact_path

TINY = PrivacyConfig(target=EvalConfig(n_models=1, epochs=10), reference=EvalConfig(n_models=1, epochs=2))


@pytest.fixture(scope="module")
def demo() -> RealData:
    return load_dataset("demo")


def small(data: RealData, per_class: int = 20, n_val: int = 40, n_test: int = 200) -> RealData:
    """A slice of a dataset in memory (its checksum is the whole dataset's: only for audit())."""
    idx = torch.cat([data.class_indices()[c][:per_class] for c in range(data.n_classes)])
    x = {"train": data.x["train"][idx], "val": data.x["val"][:n_val], "test": data.x["test"][:n_test]}
    y = {"train": data.y["train"][idx], "val": data.y["val"][:n_val], "test": data.y["test"][:n_test]}
    return RealData(data.spec, x, y, data.mean, data.std, data.checksum)


@pytest.fixture(scope="module")
def few(demo) -> RealData:
    return small(demo)


def sets(data: RealData) -> dict[str, SyntheticSet]:
    g = torch.Generator().manual_seed(0)
    x, y = data.x["train"], data.y["train"]
    return {"copies": SyntheticSet(x, y), "noisy": SyntheticSet(x + 0.2 * torch.randn(x.shape, generator=g), y),
            "noise": SyntheticSet(torch.randn(x.shape, generator=g), y),
            "rescaled": SyntheticSet(1e6 * x - 3e5, y)}  # the patients, at another brightness and contrast


def save_set(path: Path, synset: SyntheticSet, data: RealData, **meta) -> Path:
    synset.meta = {"method": "random", "dataset": data.spec.name, "ipc": 2, "seed": 0, "budget": "smoke",
                   "job_id": "privacy-test-job", "label_type": "hard", "data_checksum": data.checksum,
                   "normalisation": {"mean": list(data.mean), "std": list(data.std)}, **meta}
    return synset.save(path)


# ------------------------------------------------------------------------------- TPR at FPR
MEMBERS = [0.9, 0.8, 0.7, 0.6, 0.1]
NONMEMBERS = [0.75, 0.5, 0.4, 0.3, 0.2, 0.2, 0.1, 0.05, 0.0, -0.1]


@pytest.mark.parametrize("fpr, tpr", [(0.0, 0.4), (0.05, 0.4), (0.1, 0.8), (0.25, 0.8), (0.5, 0.8), (0.6, 0.8),
                                      (0.7, 1.0)])
def test_tpr_at_fpr_by_hand(fpr, tpr):
    """By hand: at fpr 0.1 one of the 10 non-members may score above the threshold, so it sits at
    the second-highest non-member (0.5) and catches 0.9, 0.8, 0.7, 0.6; at 0.6 six may pass (the
    two tied 0.2s included), the threshold is 0.1 and the member at 0.1 is not above it."""
    assert tpr_at_fpr(np.array(MEMBERS), np.array(NONMEMBERS), fpr) == pytest.approx(tpr)


def test_tpr_at_fpr_counts_false_positives_exactly():
    nonmembers = np.arange(100.0)
    members = np.array([28.5, 70.5, 71.5])
    # 29 % of 100 non-members is 29 (not 28, as 0.29 * 100 = 28.999999999999996 would floor to)
    assert tpr_at_fpr(members, nonmembers, 0.29) == pytest.approx(2 / 3)
    assert tpr_at_fpr(members, nonmembers, 0.28) == pytest.approx(1 / 3)


def test_tpr_at_fpr_agrees_with_the_roc_curve():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.5, 1, 300), rng.normal(0, 1, 2000)
    fprs, tprs, _ = roc_curve(np.r_[np.ones(300), np.zeros(2000)], np.r_[members, nonmembers])
    for target in (0.001, 0.01, 0.1, 0.5):
        assert tpr_at_fpr(members, nonmembers, target) == pytest.approx(tprs[fprs <= target].max())


def test_attack_metrics_of_separated_and_of_identical_scores():
    sep = attack_metrics(np.array([5.0, 6, 7]), np.array([1.0, 2, 3, 4]))
    assert sep == {"auc": 1.0, "tpr_at_1pct_fpr": 1.0, "tpr_at_0.1pct_fpr": 1.0}
    same = attack_metrics(np.zeros(50), np.zeros(50))
    assert same == {"auc": 0.5, "tpr_at_1pct_fpr": 0.0, "tpr_at_0.1pct_fpr": 0.0}


# --------------------------------------------------------------------------- memorisation
def test_near_copies_in_pixel_space(few):
    train, heldout = flat(few.x["train"]), flat(torch.cat([few.x["val"], few.x["test"]]))
    s = {k: flat(v.images) for k, v in sets(few).items()}
    copies, noisy, noise = (near_copies(s[k], train, heldout) for k in ("copies", "noisy", "noise"))
    assert copies["near_copy_share"] == 1.0 and copies["distance"]["per_image"] == [0.0] * len(train)
    assert copies["nearest_train_index"] == list(range(len(train)))
    assert noisy["near_copy_share"] == 1.0 and noise["near_copy_share"] == 0.0
    # the yardstick: 5 % of the held-out images lie at or below the threshold
    assert copies["threshold"] == noise["threshold"] > 0
    held = near_copies(heldout, train, heldout)
    assert held["near_copy_share"] == pytest.approx(0.05, abs=1 / len(heldout))
    assert 0.15 < noisy["distance"]["median"] < 0.25  # RMS of N(0, 0.2^2) noise
    assert copies["distance_ratio"] == 0.0 and noise["distance_ratio"] > 1
    assert held["distance_ratio"] == pytest.approx(1.0)


def test_standardized_pixel_space_sees_copies_at_another_scale(few):
    """A set that stores its patients at another brightness and contrast is a set of copies: raw pixel
    distance calls it far from every patient, the standardized space calls it copies, and neither calls
    fresh held-out patients or noise copies."""
    train, heldout = few.x["train"], torch.cat([few.x["val"], few.x["test"]])
    rescaled = sets(few)["rescaled"].images[::2]  # every other patient, so the matched indices say something
    raw = near_copies(flat(rescaled), flat(train), flat(heldout))
    assert raw["near_copy_share"] == 0.0 and raw["distance_ratio"] > 1e5
    z = near_copies(*(standardized(x) for x in (rescaled, train, heldout)))
    assert z["near_copy_share"] == 1.0 and z["distance"]["median"] < 1e-3
    assert z["nearest_train_index"] == list(range(0, len(train), 2))
    noise = near_copies(*(standardized(x) for x in (sets(few)["noise"].images, train, heldout)))
    held = near_copies(*(standardized(x) for x in (heldout, train, heldout)))
    assert noise["near_copy_share"] == 0.0 and held["distance_ratio"] == pytest.approx(1.0)


def test_standardized_rows_by_hand_and_per_channel():
    # one channel: mean 0, RMS 1, a constant row is zeros, and two rows lie at sqrt(2 (1 - r))
    a = standardized(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]))
    b = standardized(torch.tensor([[4.0, 2.0, 3.0, 1.0]]))
    assert a[0] == pytest.approx([-1.3416408, -0.4472136, 0.4472136, 1.3416408]) and list(a[1]) == [0.0] * 4
    r = np.corrcoef([1, 2, 3, 4], [4, 2, 3, 1])[0, 1]  # -0.6
    assert np.sqrt(((a[0] - b[0]) ** 2).mean()) == pytest.approx(np.sqrt(2 * (1 - r)), rel=1e-6)
    # an RGB image with each channel at its own brightness and contrast is the image itself
    x = torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    tinted = x * torch.tensor([2.0, 0.5, 30.0]).view(1, 3, 1, 1) + torch.tensor([1.0, -4.0, 7.0]).view(1, 3, 1, 1)
    assert np.abs(standardized(tinted) - standardized(x)).max() < 1e-5
    assert np.abs(standardized(x.flatten(1)) - standardized(x)).max() > 0.01  # not per image: per channel


def test_set_distance_attack_sees_copies_not_noise(few):
    s = sets(few)
    copies, noise = set_distance_attack(s["copies"].images, few), set_distance_attack(s["noise"].images, few)
    assert copies == {"auc": 1.0, "tpr_at_1pct_fpr": 1.0, "tpr_at_0.1pct_fpr": 1.0}
    assert noise["tpr_at_1pct_fpr"] <= 0.05 and abs(noise["auc"] - 0.5) < 0.15


def tiny_3d() -> RealData:
    spec = replace(get_spec("adrenalmnist3d"), name="tiny3d", size=8)
    g = torch.Generator().manual_seed(3)
    x = {s: torch.randn(n, 1, 8, 8, 8, generator=g) for s, n in (("train", 24), ("val", 8), ("test", 16))}
    y = {s: torch.arange(len(v)) % 2 for s, v in x.items()}
    return RealData(spec, x, y, (0.5,), (0.25,), "tiny3d-checksum")


def test_3d_audit_and_middle_slice_figure(tmp_path):
    data = tiny_3d()
    x = data.x["train"][:6]
    copies = audit(SyntheticSet(x, data.y["train"][:6]), data,
                   PrivacyConfig(target=EvalConfig(n_models=1, epochs=2), reference=EvalConfig(n_models=1, epochs=1)))
    assert copies["memorisation"]["pixel"]["near_copy_share"] == 1.0
    assert copies["memorisation"]["embedding"]["near_copy_share"] == 1.0
    assert copies["memorisation"]["pixel"]["nearest_train_index"] == list(range(6))
    assert copies["membership"]["n_members"] == 24 and copies["membership"]["n_nonmembers"] == 16
    noise = audit(SyntheticSet(torch.randn(6, 1, 8, 8, 8, generator=torch.Generator().manual_seed(9)) * 3,
                               data.y["train"][:6]), data,
                  PrivacyConfig(target=EvalConfig(n_models=1, epochs=1), reference=EvalConfig(n_models=1, epochs=1)))
    assert noise["memorisation"]["pixel"]["near_copy_share"] == 0.0
    out = nearest_figure(x, data.y["train"][:6], data, {**copies, "method": "copies", "dataset": "tiny3d", "ipc": 3},
                         tmp_path / "pairs.png")
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.shape[1] > 2 * img.shape[0]  # 6 pairs as 4 per row: 2 rows of 8 panels


# -------------------------------------------------------------------------- whole audit
@pytest.fixture(scope="module")
def audited(few):
    cache: dict = {}
    return {name: audit(s, few, TINY, seed=0, reference_cache=cache) for name, s in sets(few).items()}


@pytest.mark.slow
def test_the_audit_sees_copies_at_another_scale_in_the_standardized_space(audited):
    mem = audited["rescaled"]["memorisation"]
    assert mem["pixel"]["near_copy_share"] == 0.0 and mem["pixel_standardized"]["near_copy_share"] == 1.0
    assert audited["noise"]["memorisation"]["pixel_standardized"]["near_copy_share"] == 0.0


def test_the_figure_pairs_images_in_the_space_that_finds_more_copies():
    share = lambda *shares: dict(zip(("pixel", "pixel_standardized"), ({"near_copy_share": s} for s in shares)))
    assert figure_space(share(0.0, 1.0)) == "pixel_standardized"
    assert figure_space(share(0.25, 0.1)) == "pixel"
    assert figure_space(share(0.5, 0.5)) == "pixel"  # a tie keeps raw pixels
    assert figure_space({"pixel": {"near_copy_share": 0.0}, "embedding": {"near_copy_share": 1.0}}) == "pixel"


@pytest.mark.slow
def test_the_figure_of_a_rescaled_copy_pairs_each_image_with_its_patient(audited, few, tmp_path):
    record = audited["rescaled"]
    space, idx, dist = figure_pairs(record)
    assert space == "pixel_standardized" and idx == list(range(len(few.y["train"]))) and max(dist) < 1e-3
    assert record["memorisation"]["pixel"]["nearest_train_index"] != idx  # raw pixels pair them with other patients
    out = nearest_figure(sets(few)["rescaled"].images, few.y["train"], few,
                         {**record, "method": "rescaled", "dataset": "demo", "ipc": 20}, tmp_path / "pairs.png")
    assert out.stat().st_size > 0


@pytest.mark.slow
def test_copies_are_flagged_and_leak(audited):
    copies, noise = audited["copies"], audited["noise"]
    for space in ("pixel", "embedding"):
        assert copies["memorisation"][space]["near_copy_share"] == 1.0
    target = copies["membership"]["target"]
    assert target["auc"]["mean"] > 0.6 and target["auc"]["mean"] > noise["membership"]["target"]["auc"]["mean"] + 0.1
    assert copies["membership"]["set_distance"]["tpr_at_0.1pct_fpr"] == 1.0
    assert copies["membership"]["lira"].startswith("not run")


@pytest.mark.slow
def test_noise_is_not_a_copy_and_does_not_leak(audited):
    noise = audited["noise"]
    for space in ("pixel", "embedding"):
        assert noise["memorisation"][space]["near_copy_share"] == 0.0
    assert abs(noise["membership"]["target"]["auc"]["mean"] - 0.5) < 0.1
    assert noise["membership"]["set_distance"]["tpr_at_1pct_fpr"] <= 0.05


@pytest.mark.slow
def test_training_images_plus_small_noise_are_flagged(audited):
    noisy = audited["noisy"]["memorisation"]
    assert noisy["pixel"]["near_copy_share"] == 1.0 and noisy["embedding"]["near_copy_share"] >= 0.9
    assert noisy["pixel"]["distance"]["min"] > 0  # not copies: flagged because they are close


@pytest.mark.slow
def test_same_seed_same_figures_other_seed_other_networks(few, audited):
    again = audit(sets(few)["copies"], few, TINY, seed=0)
    strip = lambda r: {k: v for k, v in r.items() if k != "audit_seconds"}  # noqa: E731
    assert json.dumps(strip(again), sort_keys=True) == json.dumps(strip(audited["copies"]), sort_keys=True)
    other = audit(sets(few)["copies"], few, TINY, seed=1)
    assert other["membership"]["target"] != again["membership"]["target"]
    assert other["memorisation"]["pixel"] == again["memorisation"]["pixel"]  # no randomness in pixel distances


# ---------------------------------------------------------------------- CLI, store, table
@pytest.mark.slow
def test_cli_stores_links_and_tables_regenerate_from_files(tmp_path, monkeypatch):
    from mddbench.api import budgets

    monkeypatch.setitem(budgets.BUDGETS, "smoke", replace(budgets.BUDGETS["smoke"], version=2))  # a later definition
    out = tmp_path / "out"
    assert main(["run", "--method", "random", "--dataset", "demo", "--ipc", "2", "--budget", "smoke",
                 "--eval-n-models", "1", "--eval-epochs", "1", "--out", str(out), "--quiet"]) == 0
    (evaluated,) = ResultStore(out).records()
    assert main(["privacy", str(artifact_path(evaluated, out).parent), "--out", str(out), "--real-epochs", "1",
                 "--quiet"]) == 0
    (record,) = PrivacyStore(out).privacy_records()
    assert record["privacy_version"] == PRIVACY_VERSION and record["eval_record_id"] == evaluated["id"]
    assert record["config"]["target"] == evaluated["eval_config"]  # the recorded evaluation's networks
    assert record["membership"]["target"]["test_acc"]["per_model"] == evaluated["metrics"]["test_acc"]["per_model"]
    assert record["budget"] == "smoke-custom" and record["memorisation"]["pixel"]["near_copy_share"] == 1.0
    assert record["budget_version"] == evaluated["budget_version"] == 2  # the audited set's definition
    assert record["artifact_sha256"] == evaluated["artifact_sha256"] is not None  # this very set was audited
    assert record["memorisation"]["pixel_standardized"]["near_copy_share"] == 1.0  # random's images are patients
    assert any(line.strip().startswith("standardized pixel 100.0 %") for line in summary_lines(record))
    assert [p.suffix for p in (out / "privacy").iterdir()] == [".png"]
    assert list(out.rglob("*.safetensors")) == [artifact_path(evaluated, out)]  # nothing trained on patients is saved
    assert main(["privacy", str(artifact_path(evaluated, out)), "--out", str(out), "--real-epochs", "1", "--quiet"]) == 0  # skipped
    assert len(PrivacyStore(out).privacy_records()) == 1 and len(ResultStore(out)) == 1
    old = {k: v for k, v in record.items() if k != "memorisation"}  # an audit made before a measurement existed
    old["memorisation"] = {k: v for k, v in record["memorisation"].items() if k != "pixel_standardized"}
    assert PrivacyStore(out).replace_privacy(old) and PrivacyStore(out).privacy_records() == [old]
    assert main(["privacy", str(artifact_path(evaluated, out)), "--out", str(out), "--real-epochs", "1", "--quiet",
                 "--again"]) == 0  # audited afresh, and stored in the old audit's place
    (fresh,) = PrivacyStore(out).privacy_records()
    assert fresh["id"] == record["id"] and fresh["memorisation"]["pixel_standardized"]["near_copy_share"] == 1.0
    lb = tmp_path / "lb"
    assert main(["leaderboard", "--results", str(out), "--to", str(lb)]) == 0
    table = (lb / "privacy_smoke-custom_v2.csv").read_text()
    assert "random" in table and "real (reference)" in table and "100.00 ± 0.00" in table
    again = tmp_path / "again"
    assert main(["leaderboard", "--records", str(lb / "records.jsonl"), "--to", str(again)]) == 0
    assert (again / "privacy_smoke-custom_v2.csv").read_text() == table
    assert ResultStore(out).records() == [evaluated]  # the evaluation records are untouched


def test_sets_no_run_of_ours_made_are_told_apart_by_their_file(tmp_path, demo):
    asked = []
    paths = [save_set(tmp_path / f"{i}.safetensors", SyntheticSet(demo.x["train"][i:i + 4], demo.y["train"][i:i + 4]),
                      demo, job_id=None) for i in (0, 4)]
    for path in (*paths, paths[0]):  # `known` says "stored": the audit stops before any work
        assert audit_artifact(path, known=lambda pid: asked.append(pid) or True)[0] is None
    assert asked[0] != asked[1] and asked[0] == asked[2]  # used to be one id for every external set of a seed


@pytest.mark.slow
def test_a_set_without_a_stored_evaluation_is_audited_with_its_budget(tmp_path, demo):
    path = save_set(tmp_path / "set.safetensors", SyntheticSet(demo.x["train"][:4], demo.y["train"][:4]), demo)
    out = tmp_path / "out"
    assert main(["privacy", str(path), "--out", str(out), "--epochs", "1", "--real-epochs", "1", "--quiet",
                 "--figure", str(tmp_path / "f.png")]) == 0
    (record,) = PrivacyStore(out).privacy_records()
    assert record["eval_record_id"] is None and record["config"]["target"]["n_models"] == 2  # smoke's
    assert (tmp_path / "f.png").is_file() and not (out / "privacy").exists() or not any((out / "privacy").iterdir())


def test_privacy_store_round_trip_leaves_the_records_alone(tmp_path):
    rec = {"id": "p1", "privacy_version": PRIVACY_VERSION, "job_id": "j", "eval_record_id": None, "method": "dsa",
           "dataset": "demo", "ipc": 2, "seed": 0, "budget": "quick", "memorisation": {"x": float("nan")},
           "membership": {}}
    store = PrivacyStore(tmp_path / "a")
    assert store.add_privacy(rec) == ("p1", True) and store.add_privacy(rec) == ("p1", False)
    assert store.has_privacy("p1") and not store.has_privacy("p2") and len(store) == 0
    assert store.export_privacy(tmp_path / "privacy.jsonl") == 1
    other = PrivacyStore(tmp_path / "b")
    assert other.import_privacy(tmp_path / "privacy.jsonl") == 1
    assert other.privacy_records() == [{**rec, "memorisation": {"x": None}}]  # strict JSON: NaN stored as null
    with pytest.raises(ConfigError, match="membership"):
        other.add_privacy({k: v for k, v in rec.items() if k != "membership"})


def test_privacy_table_pools_seeds():
    def rec(seed, share, auc):
        stat = lambda v: {"mean": v, "std": 0.0, "n": 1, "per_model": [v], "diverged": 0}  # noqa: E731
        attack = {"auc": stat(auc), "tpr_at_1pct_fpr": stat(0.02), "tpr_at_0.1pct_fpr": stat(0.0),
                  "test_acc": stat(0.7)}
        return {"id": str(seed), "privacy_version": PRIVACY_VERSION, "job_id": f"j{seed}", "eval_record_id": "e",
                "method": "dsa", "dataset": "breastmnist", "ipc": 1, "seed": seed, "budget": "quick",
                "eval_model": "convnet", "data_checksum": "c", "config": {"reference": {"epochs": 30}},
                "memorisation": {"pixel": {"near_copy_share": share, "distance_ratio": 0.5},
                                 "embedding": {"near_copy_share": share}},
                "membership": {"target": attack, "reference": attack,
                               "set_distance": {"auc": 0.5, "tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.0}}}

    later = rec(1, 1.0, 0.5)  # audited after the standardized space arrived
    later["memorisation"]["pixel_standardized"] = {"near_copy_share": 0.25, "distance_ratio": 0.125}
    df = privacy_table([rec(0, 0.5, 0.6), later])
    row = df[df["method"] == "dsa"].iloc[0]
    assert row["seeds"] == 2 and row["near copies, pixel"] == "75.00 ± 25.00"
    assert row["near copies, standardized pixel"] == "25.00 ± 0.00 (1 of 2 seeds)"
    assert row["distance ratio, standardized pixel"] == "12.50 ± 0.00 (1 of 2 seeds)"
    assert privacy_table([rec(0, 0.5, 0.6)]).iloc[0]["near copies, standardized pixel"] == "-"
    assert row["loss attack AUC"] == "55.00 ± 5.00"
    ref = df[df["method"] == "real (reference)"].iloc[0]
    assert ref["seeds"] == 2 and ref["near copies, pixel"] == "-" and ref["loss attack AUC"] == "55.00 ± 5.00"


def test_privacy_tables_never_pool_budget_versions(tmp_path):
    """Sets made under two definitions of one budget go to two tables, labelled as the accuracy tables are."""
    stat = {"mean": 0.5, "std": 0.0, "n": 1, "per_model": [0.5], "diverged": 0}
    attack = {"auc": stat, "tpr_at_1pct_fpr": stat, "tpr_at_0.1pct_fpr": stat, "test_acc": stat}

    def rec(i, **version):
        return {"id": str(i), "privacy_version": PRIVACY_VERSION, "job_id": f"j{i}", "eval_record_id": None,
                "method": "ptm", "dataset": "breastmnist", "ipc": 2, "seed": i, "budget": "quick", **version,
                "eval_model": "convnet", "data_checksum": "c", "config": {"reference": {"epochs": 30}},
                "memorisation": {"pixel": {"near_copy_share": 0.0, "distance_ratio": 5.0},
                                 "embedding": {"near_copy_share": 0.0}},
                "membership": {"target": attack, "reference": attack,
                               "set_distance": {"auc": 0.5, "tpr_at_1pct_fpr": 0.0, "tpr_at_0.1pct_fpr": 0.0}}}

    written = write_privacy_leaderboard([rec(0), rec(1, budget_version=2), rec(2, budget_version=3),
                                         rec(3, budget_version=3)], tmp_path)
    assert sorted(p.name for p in written) == ["privacy_quick.csv", "privacy_quick.md", "privacy_quick_v2.csv",
                                               "privacy_quick_v2.md", "privacy_quick_v3.csv", "privacy_quick_v3.md"]
    seeds = lambda name: pd.read_csv(tmp_path / name).query("method == 'ptm'")["seeds"].item()  # noqa: E731
    assert [seeds(f"privacy_quick{v}.csv") for v in ("", "_v2", "_v3")] == [1, 1, 2]
    assert "budget `quick_v3`" in (tmp_path / "privacy_quick_v3.md").read_text()


# ---------------------------------------------------------------------------- bad input
def test_a_set_made_from_other_data_is_refused(tmp_path, demo, capsys):
    idx = torch.arange(8)
    path = save_set(tmp_path / "set.safetensors", SyntheticSet(demo.x["train"][idx], demo.y["train"][idx]), demo,
                    data_checksum="0" * 32)
    with pytest.raises(DataError) as err:
        load_for_audit(path)
    assert demo.checksum in str(err.value) and "0" * 32 in str(err.value) and "--data-root" in str(err.value)
    assert main(["privacy", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "was distilled from data with md5" in capsys.readouterr().err
    assert main(["eval", str(path), "--out", str(tmp_path / "out")]) == 2  # one check, both commands
    err = capsys.readouterr().err
    assert "cannot evaluate" in err and "was distilled from data with md5" in err and "--data-root" in err
    assert not (tmp_path / "out" / "results.sqlite").exists() or not PrivacyStore(tmp_path / "out").privacy_records()


def test_a_set_whose_dataset_file_is_missing_is_refused(tmp_path, monkeypatch, demo):
    monkeypatch.setenv("MDDBENCH_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.medmnist copy to find either
    path = save_set(tmp_path / "set.safetensors", SyntheticSet(demo.x["train"][:2], demo.y["train"][:2]), demo,
                    dataset="breastmnist", data_checksum="750601b1f35ba3300ea97c75c52ff8f6")
    with pytest.raises(DataError, match="cannot audit .*breastmnist.*breastmnist.npz"):
        load_for_audit(path, str(tmp_path / "empty"))


@pytest.mark.parametrize("meta, message", [({"method": "real"}, "never a shareable set"),
                                           ({"data_checksum": None}, "no data checksum")])
def test_real_sets_and_unverifiable_sets_are_refused(tmp_path, demo, meta, message):
    path = save_set(tmp_path / "set.safetensors", SyntheticSet(demo.x["train"][:2], demo.y["train"][:2]), demo,
                    **meta)
    with pytest.raises(ArtifactError, match=message):
        load_for_audit(path)
