"""SMDD, FTD and DATM: their additions to trajectory matching, checked by hand, then learning on tiny data."""
from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch
from methodkit import distill, falls, load, log_rows, make_task, noise_like, small_eval

from mddbench.api.budgets import get_budget
from mddbench.data.dataset import get_spec
from mddbench.methods.datm import DATM, expert_predictors, pick_correct, soft_label_init, start_window
from mddbench.methods.ftd import FTD, ema_update
from mddbench.methods.smdd import SMDD, prune_mask
from mddbench.registry import METHODS

# ------------------------------------------------------------------------------------------ SMDD
E = torch.tensor([0.1, 5.0, 0.3, 2.0, 0.2, 9.0, 0.05, 1.0, 0.4, 0.6])


def test_smdd_mask_drops_exactly_the_top_ratio():
    keep = prune_mask(E, 0.2)
    assert keep.tolist() == [True, False, True, True, True, False, True, True, True, True]  # 9.0 and 5.0
    assert int((~prune_mask(E, 0.3)).sum()) == 3 and not prune_mask(E, 0.3)[3]  # then 2.0
    assert prune_mask(E, 0.0).all()
    assert (prune_mask(E, 0.0, threshold=0.5) == (E <= 0.5)).all()
    assert int((~prune_mask(torch.rand(1000), 0.01)).sum()) == 10


def _smdd_loss(ratio: float, threshold: float | None = None, cumulative: bool = False, n: int = 4):
    hp = dict(prune_ratio=ratio, prune_threshold=threshold, prune_cumulative=cumulative)
    state = {"kept": torch.ones(n, dtype=torch.bool), "pruned": torch.zeros((), dtype=torch.long)}
    return SMDD().loss_fn(SimpleNamespace(hp=hp), state), state


def test_smdd_masked_loss_equals_hand_computed_value_and_mask_is_detached():
    start = torch.tensor([0.0, 0.0, 0.0, 0.0])
    target = torch.tensor([1.0, 2.0, -1.0, 3.0])
    end = torch.tensor([0.5, 1.0, 1.0, 1.0], requires_grad=True)
    # discrepancies (end - target)^2 = 0.25, 1, 4, 4: ratio 0.25 drops one of the two 4s (index 2 or 3)
    loss_fn, state = _smdd_loss(0.25)
    loss = loss_fn(end, start, target)
    dropped = int(torch.nonzero(~prune_mask((end.detach() - target) ** 2, 0.25))[0])
    kept = [i for i in range(4) if i != dropped]
    assert dropped in (2, 3) and int(state["pruned"]) == 1
    den = sum(float(target[i]) ** 2 for i in kept)  # start is 0
    assert float(loss.detach()) == pytest.approx((0.25 + 1.0 + 4.0) / den)
    loss.backward()  # the mask carries no gradient: pruned entries get none, kept ones 2 (end - target) / den
    expected = [2 * float(end[i].detach() - target[i]) / den if i in kept else 0.0 for i in range(4)]
    assert end.grad.tolist() == pytest.approx(expected)
    # a threshold on its own: e <= 1 keeps indices 0 and 1 -> (0.25 + 1) / (1 + 4)
    loss_fn, _ = _smdd_loss(0.0, threshold=1.0)
    assert float(loss_fn(end, start, target).detach()) == pytest.approx(1.25 / 5.0)


def test_smdd_cumulative_pruning_keeps_pruned_entries_pruned():
    start, target = torch.zeros(4), torch.tensor([1.0, 1.0, 1.0, 1.0])
    loss_fn, state = _smdd_loss(0.25, cumulative=True)
    loss_fn(torch.tensor([1.0, 1.0, 1.0, 5.0]), start, target)  # prunes index 3
    loss = loss_fn(torch.tensor([3.0, 1.0, 1.0, 1.0]), start, target)  # prunes index 0, index 3 stays pruned
    assert state["kept"].tolist() == [False, True, True, False] and int(state["pruned"]) == 2
    assert float(loss) == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------- FTD
def test_ftd_ema_update_by_hand():
    ema = torch.zeros(3)
    for _ in range(3):
        ema_update(ema, torch.ones(3), 0.5)
    assert ema.tolist() == pytest.approx([0.875] * 3)


@pytest.mark.slow
def test_ftd_returns_the_ema_of_every_image_step(tmp_path, expert_cache):
    m, task = make_task("ftd", hp={"iterations": 4}, run_dir=tmp_path, expert_root=expert_cache)
    seen: list[torch.Tensor] = []
    setup_state, after_step = m.extra_state, m.after_step

    def spy_setup(task, state):
        seen.append(state["images"].detach().clone())
        return setup_state(task, state)

    def spy_step(task, state, result):
        seen.append(state["images"].detach().clone())
        return after_step(task, state, result)

    m.extra_state, m.after_step = spy_setup, spy_step
    synset = m.distill(task)
    d = task.hp["ema_decay"]
    assert d == pytest.approx(0.9999 ** (5000 / 6))  # ipc 2: Table 7's ipc-1 decay, horizon kept in proportion
    ema = seen[0]
    for images in seen[1:]:
        ema = d * ema + (1 - d) * images
    assert len(seen) == 5
    assert torch.allclose(synset.images, ema, atol=1e-6)
    assert not torch.allclose(synset.images, seen[-1], atol=1e-3)  # the EMA, not the raw images


def test_ftd_presets_follow_table_7():
    spec = get_spec("breastmnist")
    paper = get_budget("paper")
    assert FTD().resolve(spec, 1, paper)["ema_decay"] == 0.9999
    assert FTD().resolve(spec, 10, paper)["ema_decay"] == 0.9995
    ipc50 = FTD().resolve(spec, 50, paper)
    assert (ipc50["ema_decay"], ipc50["expert_alpha"], ipc50["lr_teacher"]) == (0.999, 1.0, 0.01)
    quick = FTD().resolve(spec, 10, get_budget("quick"))
    assert quick["ema_decay"] == pytest.approx(0.9995 ** 50)
    assert FTD.flat_experts and FTD().recipe(quick).optimizer == "gsam"


# ------------------------------------------------------------------------------------------ DATM
def test_datm_window_by_hand():
    # CIFAR-10 ipc 10: [0, 10) growing to [0, 20) by iteration 1000
    w = [start_window(it, 0, 10, 20, 1000) for it in (0, 99, 100, 550, 999, 1000, 5000)]
    assert w == [(0, 10), (0, 10), (0, 11), (0, 15), (0, 19), (0, 20), (0, 20)]
    assert start_window(300, 0, 20, 40, 2000) == (0, 23)  # 20 + int(20 * 300 / 2000)
    assert start_window(0, 20, 50, 70, 100, sequential=False) == (20, 70)
    assert start_window(0, 3, 3, 10, 100) == (3, 4)  # never empty


def test_datm_window_scales_with_the_budget():
    spec = get_spec("breastmnist")
    paper = DATM().resolve(spec, 10, get_budget("paper"))
    assert [paper[k] for k in ("min_start_epoch", "current_max_start_epoch", "max_start_epoch",
                               "expansion_end_epoch", "threshold", "lr_y")] == [0, 10, 20, 1000, 1.0, 2.0]
    quick = DATM().resolve(spec, 10, get_budget("quick"))  # 12-epoch experts, 200 iterations (2 % of 10000)
    assert [quick[k] for k in ("min_start_epoch", "current_max_start_epoch", "max_start_epoch",
                               "expansion_end_epoch", "iterations")] == [0, 5, 10, 20, 200]
    assert DATM().resolve(spec, 1, get_budget("paper"))["threshold"] == 1.1


def test_pick_correct_scans_in_order_then_falls_through_to_the_next_expert():
    images = torch.arange(10.0)[:, None]

    def predictor(right: set[int]):  # predicts class 1 for the images in `right`, class 0 otherwise
        return lambda x: torch.stack([torch.tensor([0.0, 1.0]) if int(v) in right else torch.tensor([1.0, 0.0])
                                      for v in x[:, 0]])

    first, second = predictor({1, 4, 7, 8}), predictor({0, 2, 4, 9})
    assert pick_correct([first, second], images, 1, 3, batch=4).tolist() == [1, 4, 7]
    assert pick_correct([first, second], images, 1, 6, batch=4).tolist() == [0, 1, 2, 4, 7, 8]
    assert pick_correct([first, second], images, 1, 9).tolist() == [0, 1, 2, 4, 7, 8, 9]


def _index_predictor(data, right):
    """A fake expert that knows each train image's label and gets it right iff ``right(train index)``."""
    x, y, k = data.x["train"], data.y["train"], data.n_classes

    def predict(batch: torch.Tensor) -> torch.Tensor:
        idx = (batch[:, None] == x[None]).flatten(2).all(-1).float().argmax(1)
        guess = torch.where(torch.tensor([right(int(i)) for i in idx]), y[idx], (y[idx] + 1) % k)
        return torch.nn.functional.one_hot(guess, k).float()

    return predict


def test_datm_init_picks_images_the_expert_classifies_correctly(monkeypatch, caplog):
    m, task = make_task("datm", ipc=10)
    x = task.data.x["train"]
    monkeypatch.setattr("mddbench.methods.datm.expert_predictors",
                        lambda task, experts: [_index_predictor(task.data, lambda i: i % 3 != 0)])
    images = m.initial_images(task, None)
    idx = (images[:, None] == x[None]).flatten(2).all(-1).float().argmax(1)
    assert images.shape == (30,) + task.spec.shape
    assert (task.data.y["train"][idx] == task.hard_labels()).all()
    assert all(int(i) % 3 != 0 for i in idx)  # a random draw of 30 would hit a multiple of 3 almost surely
    # no expert right about anything: random real images of each class, and a warning
    monkeypatch.setattr("mddbench.methods.datm.expert_predictors",
                        lambda task, experts: [_index_predictor(task.data, lambda i: False)])
    with caplog.at_level(logging.WARNING, logger="mddbench.methods.datm"):
        images = m.initial_images(task, None)
    idx = (images[:, None] == x[None]).flatten(2).all(-1).float().argmax(1)
    assert (task.data.y["train"][idx] == task.hard_labels()).all()
    assert sum("random real images" in r.getMessage() for r in caplog.records) == 3


def test_soft_label_init_by_hand():
    logits = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]],  # expert 0: right, wrong, wrong
                           [[0.0, 1.0], [0.0, 3.0], [0.0, 2.0]],  # expert 1: wrong, right, wrong
                           [[4.0, 1.0], [-1.0, 1.0], [0.0, 5.0]]])  # expert 2: right, right, wrong
    labels = soft_label_init(logits, torch.tensor([0, 1, 0]))
    assert labels[0].tolist() == pytest.approx([3.0, 0.5])
    assert labels[1].tolist() == pytest.approx([-0.5, 2.0])
    assert labels[2].tolist() == pytest.approx([math.log(9.0), 0.0])  # nobody right: 90 % on its class
    assert torch.softmax(labels[2], 0)[0] == pytest.approx(0.9)


def _datm(tmp_path, expert_cache, name: str, **hp):
    return distill("datm", hp=hp, run_dir=tmp_path / name, expert_root=expert_cache)


def test_datm_labels_are_expert_logits_learnable_and_gated(tmp_path, expert_cache):
    init, task = _datm(tmp_path, expert_cache, "init", iterations=0)
    experts = task.experts(DATM().recipe(task.hp))
    with torch.no_grad():
        logits = torch.stack([p(init.images) for p in expert_predictors(task, experts)])
    assert init.labels.dtype == torch.float32 and init.labels.shape == (6, 3)
    assert torch.allclose(init.labels, soft_label_init(logits, task.hard_labels()), atol=1e-5)

    gated, task = _datm(tmp_path, expert_cache, "gated", iterations=3, threshold=0.0, lr_lr=1e-5)
    rows = log_rows(task, "datm")
    assert [r["stepped"] for r in rows] == [0, 0, 0] and min(r["loss"] for r in rows) > 0
    assert task.loops[0].updates == 0  # recorded: the gate left the set at its initialisation
    assert torch.equal(gated.images, init.images) and torch.equal(gated.labels, init.labels)
    assert gated.lr == init.lr == pytest.approx(task.hp["lr_teacher"])

    # tiny28's experts take one SGD step per epoch, so the small-data rule fixes the step size: learn it here
    free, task = _datm(tmp_path, expert_cache, "free", iterations=3, threshold=1e9, lr_lr=1e-5)
    assert [r["stepped"] for r in log_rows(task, "datm")] == [1, 1, 1] and task.loops[0].updates == 3
    assert free.label_type == "soft"
    assert (free.labels - init.labels).abs().max() > 1e-3  # the labels learn
    assert not torch.equal(free.images, init.images) and free.lr != init.lr


# --------------------------------------------------------------------------- learning, all three
LEARN_HP = {"iterations": 30, "max_start_epoch": 1}  # one segment per expert: less noise in the loss


@pytest.fixture(scope="module")
def learned(tmp_path_factory, expert_cache):
    runs = {}
    for name in ("smdd", "ftd", "datm"):
        hp = dict(LEARN_HP, **({"current_max_start_epoch": 1} if name == "datm" else {}))
        synset, task = distill(name, hp=hp, run_dir=tmp_path_factory.mktemp(name), expert_root=expert_cache)
        runs[name] = synset, task, log_rows(task, name)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smdd", "ftd", "datm"])
def test_matching_loss_falls(learned, name):
    _, task, rows = learned[name]
    assert falls([r["loss"] for r in rows])
    assert sum(r["stepped"] for r in rows) >= len(rows) // 2
    if name == "smdd":
        assert all(r["pruned"] == rows[0]["pruned"] > 0 for r in rows)
        assert rows[0]["pruned_frac"] == pytest.approx(0.01, abs=1e-4)  # prune_ratio's default
    if name == "datm":
        assert all(r["start_epoch"] < r["window_high"] for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smdd", "ftd", "datm"])
def test_distilled_set_beats_noise(learned, name):
    synset, _, _ = learned[name]
    data = load("tiny28")
    assert small_eval(synset, data, n_models=2, epochs=30) > small_eval(noise_like(synset), data, n_models=2,
                                                                        epochs=30) + 0.1


def test_registered_with_summaries():
    for name in ("smdd", "ftd", "datm"):
        assert METHODS.get(name)().summary
    assert "reconstruction" in SMDD.summary
    assert DATM.flat_experts and FTD.flat_experts and not SMDD.flat_experts


def test_datm_declares_soft_labels():
    from mddbench.registry import METHODS

    assert METHODS.get("datm").label_type == "soft" and METHODS.get("ftd").label_type == "hard"
