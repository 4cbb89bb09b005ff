"""The coreset rows `herding` and `kcenter` (spec new_methods.md §3): the selection rules on constructed
features, and the rows on tiny data (real train images, per class, seeded, clear errors, better than noise)."""
from __future__ import annotations

import pytest
import torch
from methodkit import distill, load, make_task, noise_like, small_eval

from mddbench.api.budgets import BUDGETS, get_budget
from mddbench.api.parity import method_share
from mddbench.data.dataset import get_spec
from mddbench.errors import ConfigError
from mddbench.methods.coreset import covering_radius, herding_order, k_center_order
from mddbench.registry import METHODS
from mddbench.report.privacy_leaderboard import BY_CONSTRUCTION, privacy_table
from mddbench.trajectory.experts import MTT_RECIPE

CORESETS = ("herding", "kcenter")


def gaussian(n: int = 200, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def mean_error(f: torch.Tensor, picks: list[int] | torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(f[torch.as_tensor(picks)].mean(0) - f.mean(0)))


# ------------------------------------------------------------------------------------ herding
def test_herding_running_mean_approaches_the_class_mean_far_faster_than_random():
    f = gaussian()
    order = herding_order(f, 30)
    errors = [mean_error(f, order[:k]) for k in range(1, 31)]
    g = torch.Generator().manual_seed(1)
    random_20 = sum(mean_error(f, torch.randperm(len(f), generator=g)[:20]) for _ in range(50)) / 50
    assert errors[19] < 0.2 * random_20, (errors[19], random_20)  # measured: 0.066 against 0.60
    assert errors[-1] < 0.1 * errors[0]
    # non-increasing-ish: herding's error is O(1/k), so k * error stays bounded and the tail never regains
    # what the head lost
    assert max(k * e for k, e in enumerate(errors, 1)) <= 2.0 * errors[0] + 1.0
    blocks = [sum(errors[i:i + 5]) / 5 for i in range(0, 30, 5)]  # one pick may overshoot; five never do here
    assert all(b < a for a, b in zip(blocks, blocks[1:])), blocks


def test_herding_takes_the_argmin_where_deepcore_takes_the_argmax():
    f = torch.tensor([[-1.0], [0.0], [1.0], [10.0]])  # mean 2.5: 1 is closest, 10 farthest
    assert herding_order(f, 1) == [2]
    assert herding_order(f, 1, "argmax") == [3]  # DeepCore's herding.py L82
    assert herding_order(f, 2)[:2] != herding_order(f, 2, "argmax")[:2]


def test_herding_argmax_is_deepcores_rule():
    """A direct transcription of the rule DeepCore's loop applies (spec 3.3), on a matrix with no ties."""
    f = gaussian(30, 5, seed=3)
    taken, total, expected = torch.zeros(30, dtype=torch.bool), torch.zeros(5, dtype=torch.float64), []
    for i in range(6):
        dist = torch.linalg.vector_norm((i + 1) * f.mean(0) - total - f, dim=1)
        p = max((j for j in range(30) if not taken[j]), key=lambda j: float(dist[j]))
        expected.append(p)
        taken[p], total = True, total + f[p]
    assert herding_order(f, 6, "argmax") == expected


def test_herding_of_every_row_returns_each_once_and_ties_go_first():
    f = gaussian(12, 3)
    assert sorted(herding_order(f, 12)) == list(range(12))
    assert herding_order(torch.zeros(5, 2), 3) == [0, 1, 2]  # all tied: first indices, no repeats
    with pytest.raises(ConfigError, match="argmin"):
        herding_order(f, 2, "farthest")


# ----------------------------------------------------------------------------------- k-center
def brute_force_k_center(f: torch.Tensor, k: int, first: int) -> list[int]:
    picks = [first]
    while len(picks) < k:
        def nearest(j: int) -> float:
            return min(float(torch.linalg.vector_norm(f[j] - f[s])) for s in picks)
        rest = [j for j in range(len(f)) if j not in picks]
        picks.append(max(rest, key=nearest))  # max keeps the first of ties
    return picks


@pytest.mark.parametrize("first", [0, 7, 23])
def test_k_center_equals_brute_force_farthest_point_traversal(first):
    f = gaussian(40, 4, seed=first)
    assert k_center_order(f, 9, first) == brute_force_k_center(f, 9, first)


def test_k_center_covers_better_than_random_subsets_and_its_radius_never_grows():
    f = gaussian(d=2)  # in 2-D 15 centres cover; in 8-D (measured) the best of 30 random subsets can tie greedy
    order = k_center_order(f, 15, 0)
    radii = [covering_radius(f, order[:k]) for k in range(1, 16)]
    assert all(b <= a for a, b in zip(radii, radii[1:]))
    g = torch.Generator().manual_seed(2)
    random_radii = [covering_radius(f, torch.randperm(200, generator=g)[:15]) for _ in range(30)]
    assert radii[-1] <= min(random_radii), (radii[-1], min(random_radii))  # measured: 0.88 against 1.49
    assert radii[-1] <= 0.5 * sorted(random_radii)[15]  # against the median random subset: 0.88 against 2.17


def test_k_center_on_a_line_picks_the_ends_and_never_repeats():
    f = torch.linspace(0, 1, 11)[:, None]
    assert k_center_order(f, 3, 5) == [5, 0, 10]
    assert sorted(k_center_order(torch.zeros(4, 2), 4, 2)) == [0, 1, 2, 3]  # coinciding rows: still distinct
    with pytest.raises(ConfigError, match="cannot select 5 of 4"):
        k_center_order(torch.zeros(4, 2), 5, 0)


# ------------------------------------------------------------------------------- the two rows
@pytest.fixture(scope="module")
def selected(expert_cache):
    """Each row's set on tiny28 at ipc 3 (seed 0), the task, and a second kcenter set at seed 1."""
    out = {m: distill(m, ipc=3, expert_root=expert_cache) for m in CORESETS}
    out["kcenter_seed1"] = distill("kcenter", ipc=3, seed=1, expert_root=expert_cache)
    return out


@pytest.mark.parametrize("method", CORESETS)
def test_a_set_is_exact_train_rows_of_its_classes_class_major(method, selected):
    synset, task = selected[method]
    x, y = task.data.x["train"], task.data.y["train"]
    idx = torch.tensor(synset.meta["selection"]["train_indices"])
    assert torch.equal(synset.images, x[idx]) and torch.equal(synset.labels, y[idx])
    assert synset.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and len(set(idx.tolist())) == 9
    extractor = synset.meta["extractor"]
    assert extractor["expert"] == 0 and "ResNet-18" in extractor["deviation"]
    assert extractor["embedding"] == "net.embed (1152 dims)"  # 28 px ConvNet: 128 channels x 3 x 3


def test_the_rows_are_deterministic_given_the_seed(selected, expert_cache):
    for method in CORESETS:
        again, _ = distill(method, ipc=3, expert_root=expert_cache)
        assert again.meta["selection"] == selected[method][0].meta["selection"], method
    seed0 = selected["kcenter"][0].meta["selection"]["train_indices"]
    assert selected["kcenter_seed1"][0].meta["selection"]["train_indices"] != seed0  # another random first centre


def test_herding_row_is_herding_on_the_expert_features(selected):
    from mddbench.methods.coreset import embed, extractor

    synset, task = selected["herding"]
    net = extractor(task, MTT_RECIPE)
    x = task.data.x["train"]
    for c, idx in enumerate(task.data.class_indices()):
        order = herding_order(embed(net, x[idx]), 3)
        assert idx[order].tolist() == synset.meta["selection"]["train_indices"][3 * c:3 * c + 3]


def test_a_selected_set_beats_noise(selected):
    synset, task = selected["herding"]
    ours = small_eval(synset, task.data, n_models=1, epochs=20)  # measured: 1.00 against 0.35
    noise = small_eval(noise_like(synset), task.data, n_models=1, epochs=20)
    assert ours > noise + 0.15, (ours, noise)


# ------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("method", CORESETS)
def test_ipc_above_the_smallest_class_names_it(method):
    m, task = make_task(method, ipc=41)  # tiny28: 40 train images per class; no experts: refused before them
    with pytest.raises(ConfigError, match=r"ipc 41 is larger than class 0 \(a\), which has 40 train images"):
        m.distill(task)


@pytest.mark.parametrize("hp, message", [({"model": "convnet_bn"}, "BatchNorm"), ({"expert": 2}, "expert 2 does not"),
                                         ({"model": "resnet18_bn"}, "BatchNorm")])
def test_what_the_rows_cannot_do_is_refused(hp, message):
    for method in CORESETS:
        with pytest.raises(ConfigError, match=message):
            make_task(method, hp=hp)  # smoke: 2 experts
    with pytest.raises(ConfigError, match="argmax"):
        make_task("herding", hp={"direction": "farthest"})


# ------------------------------------------------------------------------- declarations, parity
@pytest.mark.parametrize("method", CORESETS)
def test_declarations(method):
    cls = METHODS.get(method)
    assert cls.selects_real and cls.shareable and cls.uses_ipc and not cls.reference  # as `random`
    assert cls.label_type == "hard" and cls.supports_3d and cls.summary
    assert METHODS.get("random").selects_real and not METHODS.get("mtt").selects_real


@pytest.mark.parametrize("method", CORESETS)
def test_no_iterations_to_share_and_the_budgets_experts(method):
    """Like `random`: nothing iterates, so parity has no share to compare; the selection is the same at every
    budget, and the extractor is the budget's own MTT expert buffer (what the trajectory rows match)."""
    spec, m = get_spec("breastmnist"), METHODS.get(method)()
    for budget in BUDGETS.values():
        assert method_share(method, spec, 2, budget) is None
        hp = m.resolve(spec, 2, budget)
        assert hp == m.resolve(spec, 2, get_budget("paper"))
        mtt = METHODS.get("mtt")()
        assert m.expert_recipes(hp)[0].for_budget(budget) == mtt.recipe(mtt.resolve(spec, 2, budget)).for_budget(budget)


def test_privacy_table_marks_rows_of_real_images_by_declaration(monkeypatch):
    stat = {"mean": 0.5, "std": 0.0, "n": 1, "per_model": [0.5], "diverged": 0}
    attack = {"auc": stat, "tpr_at_1pct_fpr": stat, "tpr_at_0.1pct_fpr": stat, "test_acc": stat}

    def rec(method, share):
        return {"id": method, "privacy_version": "p", "job_id": method, "method": method, "dataset": "breastmnist",
                "ipc": 2, "seed": 0, "budget": "quick", "eval_model": "convnet", "data_checksum": "c",
                "config": {"reference": {}},
                "memorisation": {"pixel": {"near_copy_share": share, "distance_ratio": 0.0},
                                 "embedding": {"near_copy_share": share}},
                "membership": {"target": attack, "reference": attack,
                               "set_distance": {"tpr_at_1pct_fpr": 0.0, "tpr_at_0.1pct_fpr": 0.0}}}

    df = privacy_table([rec("herding", 1.0), rec("kcenter", 1.0), rec("mtt", 0.0)]).set_index("method")
    for name in CORESETS:
        assert df.loc[name, "near copies, pixel"] == f"100.00 ± 0.00 {BY_CONSTRUCTION}"
        assert df.loc[name, "near copies, standardized pixel"] == "-"  # no figure: nothing to mark
    assert df.loc["mtt", "near copies, pixel"] == "0.00 ± 0.00"
    monkeypatch.setattr(METHODS.get("mtt"), "selects_real", True)  # the declaration decides, not the name
    assert privacy_table([rec("mtt", 0.0)]).iloc[0]["near copies, pixel"].endswith(BY_CONSTRUCTION)


@pytest.mark.slow
@pytest.mark.parametrize("method", CORESETS)
def test_the_rows_select_3d_volumes(method, expert_cache):
    synset, task = distill(method, dataset="tiny3d", ipc=2, expert_root=expert_cache)
    idx = torch.tensor(synset.meta["selection"]["train_indices"])
    assert synset.images.shape == (6, 1, 12, 12, 12) and torch.equal(synset.images, task.data.x["train"][idx])
    assert synset.labels.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("method, marked", [("kcenter", True), ("random", True), ("mtt", False)])
def test_the_nearest_image_figure_says_by_construction_for_rows_of_real_images(method, marked, tmp_path, monkeypatch):
    import matplotlib.figure

    from mddbench.report.privacy_figure import nearest_figure

    titles: list[str] = []
    original = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle",
                        lambda self, t, **kw: titles.append(t) or original(self, t, **kw))
    data = load("tiny28")
    pixel = {"near_copy_share": 1.0, "threshold": 0.5, "nearest_train_index": [0, 40],
             "distance": {"per_image": [0.0, 0.0]}}
    record = {"method": method, "dataset": "tiny28", "ipc": 1, "memorisation": {"pixel": pixel}}
    nearest_figure(data.x["train"][[0, 40]], torch.tensor([0, 1]), data, record, tmp_path / "f.png")
    assert ("100 % by construction" in titles[0]) == marked
