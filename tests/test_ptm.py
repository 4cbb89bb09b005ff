"""PTM: schedule arithmetic, the overlap loss, retraining resets, reduction to MTT, learning on tiny data."""
from __future__ import annotations

import math

import pytest
import torch
from methodkit import distill, falls, load, log_rows, make_task, noise_like, small_eval

from mddbench.errors import ConfigError
from mddbench.methods.ptm import (
    class_sigmas,
    halves,
    mmd2_unnormalised,
    overlap_loss,
    reset_complement,
    retraining_iterations,
    retraining_points,
    segment_starts,
    stage_of,
)
from mddbench.nn.unroll import TensorSource, match


@pytest.mark.parametrize("T,k,expected", [
    (10, 1, [(5.0, 2.5)]),
    (10, 2, [(20 / 3, 5.0), (10 / 3, 5 / 3)]),
    (12, 3, [(9.0, 7.5), (6.0, 4.5), (3.0, 1.5)]),
    (6, 2, [(4.0, 3.0), (2.0, 1.0)]),
])
def test_retraining_points_by_hand(T, k, expected):
    got = retraining_points(T, k)
    assert len(got) == k
    for (m, s), (em, es) in zip(got, expected):
        assert m == pytest.approx(em) and s == pytest.approx(es)


def test_retraining_iterations_by_hand():
    # T = 6 over 120 iterations: 20 iterations per epoch of progress; m = 4, 2; snapshots at 3, 1
    assert retraining_iterations(120, 6, 2) == [(80, 60), (40, 20)]
    # T = 10, k = 2, 100 iterations: m = 6.67 -> 67, 3.33 -> 34; snapshots 5 -> 50, 1.67 -> 17
    assert retraining_iterations(100, 10, 2) == [(67, 50), (34, 17)]


def test_stage_schedule_grows_from_1_to_T():
    assert [stage_of(it, 10, 5) for it in range(10)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [stage_of(it, 7, 3) for it in range(7)] == [1, 1, 1, 2, 2, 3, 3]


def test_halves_split_each_class_and_odd_ipc_favours_the_foundation():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    assert halves(labels, 2).tolist() == [False, False, True, False, False, True, True]


def test_overlap_loss_is_minus_mmd2_by_hand():
    f, c = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [4.0]])
    e = math.exp
    mmd2 = (2 + 2 * e(-0.5)) * 2 - 2 * (2 * e(-4.5) + e(-8) + e(-2))
    assert float(mmd2_unnormalised(f, c, 1.0)) == pytest.approx(mmd2, rel=1e-6)
    images = torch.cat([f, c]).view(4, 1, 1, 1)
    labels = torch.zeros(4, dtype=torch.long)
    loss, _ = overlap_loss(images, labels, halves(labels, 1), 1, sigma=1.0)
    assert float(loss) == pytest.approx(-mmd2, rel=1e-6)
    # per pair: 2 x 2 pairs here; at one pair per class (ipc 2) the two reductions are the same number
    mean, _ = overlap_loss(images, labels, halves(labels, 1), 1, sigma=1.0, reduction="mean")
    assert float(mean) == pytest.approx(-mmd2 / 4, rel=1e-6)
    pair, two = images[[0, 2]], labels[:2]
    assert float(overlap_loss(pair, two, halves(two, 1), 1, 1.0, "mean")[0]) == float(
        overlap_loss(pair, two, halves(two, 1), 1, 1.0, "sum")[0])
    with pytest.raises(ConfigError, match="overlap_reduction"):
        overlap_loss(images, labels, halves(labels, 1), 1, sigma=1.0, reduction="max")


def test_overlap_gradient_pushes_the_halves_apart():
    g = torch.Generator().manual_seed(0)
    images = (torch.randn(6, 1, 4, 4, generator=g) * 0.1).requires_grad_(True)
    labels = torch.zeros(6, dtype=torch.long)
    comp = halves(labels, 1)
    before, _ = overlap_loss(images, labels, comp, 1, sigma=1.0)
    before.backward()
    with torch.no_grad():
        moved = images - 0.5 * images.grad
    after, _ = overlap_loss(moved, labels, comp, 1, sigma=1.0)
    gap = lambda x: (x[~comp].mean(0) - x[comp].mean(0)).norm()  # noqa: E731
    assert float(after) < float(before.detach())  # MMD^2 between the halves grew
    assert gap(moved) > gap(images.detach())


def test_reset_restores_the_complement_exactly_and_leaves_the_foundation():
    images = torch.arange(12.0).view(6, 1, 1, 2).requires_grad_(True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    comp = halves(labels, 2)
    snapshot = torch.full((int(comp.sum()), 1, 1, 2), -7.0)
    opt = torch.optim.SGD([images], lr=0.1, momentum=0.5)
    images.sum().backward()
    opt.step()
    foundation_before = images.detach()[~comp].clone()
    reset_complement(images, comp, snapshot, opt)
    assert torch.equal(images.detach()[comp], snapshot)
    assert torch.equal(images.detach()[~comp], foundation_before)
    buf = opt.state[images]["momentum_buffer"]
    assert torch.all(buf[comp] == 0) and torch.all(buf[~comp] != 0)


@pytest.mark.slow
def test_progressive_run_logs(tmp_path, expert_cache):
    synset, task = distill("ptm", dataset="tiny28", ipc=4, hp={"iterations": 12, "end_epoch": 3, "steps_per_epoch": 2},
                           run_dir=tmp_path / "run", expert_root=expert_cache)
    rows = log_rows(task, "ptm")
    ends = [r["end_epoch"] for r in rows]
    assert all(r["start_epoch"] == 0 for r in rows)  # the student always starts at the expert's first snapshot
    assert ends == sorted(ends) and ends[0] == 1 and ends[-1] == 3  # the end point never decreases
    assert [r["student_steps"] for r in rows] == [min(4, 2 * t) for t in ends]  # smoke: 2 steps/epoch, cap 4
    assert rows[-1]["resets"] == 2


def test_reduces_to_mtt_from_epoch_zero(tmp_path, expert_cache):
    hp = {"iterations": 1, "end_epoch": 1, "steps_per_epoch": 3, "max_syn_steps": 3, "overlap": False}
    method, task = make_task("ptm", dataset="tiny28", ipc=2, hp=hp, run_dir=tmp_path / "run",
                             expert_root=expert_cache)
    state, experts, student = method.setup(task)  # draws the initial images from the task generator
    images0, lr0 = state["images"].detach().clone(), float(state["syn_lr"])
    after_setup = task.generator.get_state()
    method2, task2 = make_task("ptm", dataset="tiny28", ipc=2, hp=hp, run_dir=tmp_path / "run2",
                               expert_root=expert_cache)
    method2.distill(task2)
    ptm_loss = log_rows(task2, "ptm")[0]["match_loss"]

    # MTT's loss from epoch 0 to epoch 1 on the same images, expert and random stream
    g = torch.Generator()
    g.set_state(after_setup)
    e = int(torch.randint(len(experts), (1,), generator=g))
    images = images0.clone().requires_grad_(True)
    lr = torch.tensor(lr0, requires_grad=True)
    res = match(student, TensorSource(images, task.hard_labels()), lr, experts.snapshot(e, 0),
                experts.snapshot(e, 1), steps=3, generator=g, augment=task.augment)
    assert res.loss == pytest.approx(ptm_loss, rel=1e-6)


@pytest.mark.slow
def test_matching_loss_falls_and_beats_noise(tmp_path, expert_cache):
    hp = {"iterations": 40, "end_epoch": 2, "steps_per_epoch": 3, "max_syn_steps": 6, "lr_img": 100.0}
    synset, task = distill("ptm", dataset="tiny28", ipc=2, hp=hp, run_dir=tmp_path / "run", expert_root=expert_cache)
    rows = log_rows(task, "ptm")
    for t in (1, 2):  # within a stage the target is fixed, so the loss must fall there
        stage = [r["match_loss"] for r in rows if r["end_epoch"] == t]
        assert falls(stage, window=5), stage
    data = load("tiny28")
    assert small_eval(synset, data) > small_eval(noise_like(synset), data) + 0.05


@pytest.mark.parametrize("hp, message", [
    ({"experts": "sgdd"}, "experts is 'default'"),  # a typo used to fall back to SGD experts silently
    ({"unroll_memory": "tesla"}, "unroll_memory"),
    ({"end_epoch": 13}, "end_epoch 13 exceeds the quick budget's"),
])
def test_check_runs_the_family_checks(hp, message):
    from mddbench.api.budgets import get_budget
    from mddbench.errors import ConfigError
    from mddbench.registry import DATASETS, METHODS

    ptm = METHODS.get("ptm")()
    spec = DATASETS.get("tiny28")
    with pytest.raises(ConfigError, match=message):
        ptm.resolve(spec, 2, get_budget("quick"), hp)
    assert ptm.resolve(spec, 2, get_budget("quick"), {"experts": "sgd"})["experts"] == "sgd"


# ------------------------------------------------------------------ issue 15: width, random segments, arms
def test_class_sigmas_are_the_median_distance_of_each_class():
    images = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 2.0]]).view(4, 1, 1, 2)
    labels = torch.tensor([0, 0, 1, 1])
    assert class_sigmas(images, labels, 2) == pytest.approx([5.0, 1.0])
    # with the widths fixed, MMD^2 follows the distance; the per-iteration median pins it at 2 - 2 exp(-1/2)
    comp = halves(labels, 2)
    moved = images.clone()
    moved[1] = torch.tensor([6.0, 8.0])
    _, fixed = overlap_loss(moved, labels, comp, 2, class_sigmas(images, labels, 2))
    _, median = overlap_loss(moved, labels, comp, 2, 0.0)
    assert median == pytest.approx(2 - 2 * math.exp(-0.5))
    assert fixed == pytest.approx(((2 - 2 * math.exp(-4 / 2)) + (2 - 2 * math.exp(-0.5))) / 2)


def test_logged_mmd_moves_at_ipc_2(tmp_path, expert_cache):
    hp = {"iterations": 6, "end_epoch": 2, "steps_per_epoch": 2, "beta2": 10.0}
    _, task = distill("ptm", dataset="tiny28", ipc=2, hp=hp, run_dir=tmp_path / "run", expert_root=expert_cache)
    mmds = [r["mmd"] for r in log_rows(task, "ptm")]
    assert mmds[0] == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-4)  # the initial pair sits at its own width
    assert max(abs(m - mmds[0]) for m in mmds[1:]) > 1e-3, mmds  # and the halves move from there


def test_random_schedule_uses_real_halves_and_the_small_data_steps():
    method, task = make_task("ptm", dataset="tiny28", ipc=2, budget="quick", hp={"schedule": "random"})
    hp = task.hp
    assert (hp["end_epoch"], hp["expert_epochs"], hp["steps_per_epoch"]) == (6, 3, 1)  # tiny28: 1 step per epoch
    assert segment_starts(6, 3, back=False) == (0, 3) and segment_starts(6, 3, back=True) == (3, 4)
    assert segment_starts(10, 2, back=False) == (0, 5) and segment_starts(10, 2, back=True) == (5, 9)
    experts = [None, None]
    fronts = {method.segment(it, task, experts)[1] for it in range(60)}
    assert fronts == {0, 1, 2}  # backend_p = 0: the front half, not the single start 0
    task.hp = dict(hp, backend_p=1.0)
    assert {method.segment(it, task, experts)[1:] for it in range(20)} == {(3, 6)}
    assert method.steps(task, 0, 3) == 3  # 3 expert epochs x the experts' 1 step, not syn_steps (20)
    with pytest.raises(Exception, match="back half has a start"):
        method.check(dict(hp, expert_epochs=4), task.spec, 2, task.budget)


def test_retraining_alone_is_an_arm(tmp_path, expert_cache):
    hp = {"iterations": 6, "end_epoch": 2, "steps_per_epoch": 2, "overlap_loss": False}
    _, task = distill("ptm", dataset="tiny28", ipc=2, hp=hp, run_dir=tmp_path / "run", expert_root=expert_cache)
    rows = log_rows(task, "ptm")
    assert rows[-1]["resets"] == 2  # retraining on
    assert all(r["loss"] == pytest.approx(r["match_loss"]) for r in rows)  # L_overlap off
    _, off = distill("ptm", dataset="tiny28", ipc=2, hp=dict(hp, overlap=False), run_dir=tmp_path / "off",
                     expert_root=expert_cache)
    assert log_rows(off, "ptm")[-1]["resets"] == 0  # overlap=false: the whole module off, as before


def test_match_weight_and_overlap_term_reach_the_images(tmp_path, expert_cache):
    # beta1 = 0: the match term's gradient is scaled away, so only the overlap term (the base's extra_loss) moves them
    hp = {"iterations": 2, "end_epoch": 2, "steps_per_epoch": 1, "beta1": 0.0, "beta2": 10.0, "retrain": False}
    method, first = make_task("ptm", dataset="tiny28", ipc=2, hp=hp, run_dir=tmp_path / "init",
                              expert_root=expert_cache)
    init = method.result(first, method.setup(first)[0])
    still, _ = distill("ptm", dataset="tiny28", ipc=2, hp=dict(hp, overlap_loss=False), run_dir=tmp_path / "still",
                       expert_root=expert_cache)
    moved, task = distill("ptm", dataset="tiny28", ipc=2, hp=hp, run_dir=tmp_path / "moved", expert_root=expert_cache)
    assert torch.equal(still.images, init.images)
    assert not torch.equal(moved.images, init.images)
    rows = log_rows(task, "ptm")
    assert rows[1]["mmd"] > rows[0]["mmd"]  # the step pushed the halves apart
    assert all(r["loss"] == pytest.approx(10.0 * r["overlap_loss"]) for r in rows)  # beta1 * match + beta2 * overlap
