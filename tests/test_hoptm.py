"""HoP-TM (spec new_methods.md 1.9): the shared unroll's midpoint, the triangle-angle loss, the self-paced mask,
the reduction to MTT/FTD with both terms off, the official rows, and learning on tiny data."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from methodkit import distill, falls, load, log_rows, make_task, noise_like, small_eval

from mddbench.api.budgets import get_budget
from mddbench.data.dataset import get_spec
from mddbench.methods.hoptm import (
    HoPTM,
    admit,
    angle_loss,
    masked_distance,
    official_row,
    threshold_at,
    triangle_cosines,
)
from mddbench.nn.augment import DSA
from mddbench.nn.losses import cross_entropy
from mddbench.nn.networks import create_network
from mddbench.nn.unroll import Student, TensorSource, match, minibatches, param_distance
from mddbench.registry import METHODS
from mddbench.seeding import generator as seeded


# ------------------------------------------------------------------------------ the unroll's midpoint
def _problem():
    net = create_network("convnet", 1, 3, 8, 2, width=4, depth=1, generator=torch.Generator().manual_seed(1))
    student = Student(net.double())
    g = torch.Generator().manual_seed(2)
    start = torch.randn(student.size, generator=g, dtype=torch.float64) * 0.3
    target = start + 0.05 * torch.randn(student.size, generator=g, dtype=torch.float64)
    images = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    return student, start, target, images, torch.arange(3).repeat_interleave(2)


def _run(problem, memory="full", steps=4, keep=(), loss_fn=param_distance, augment=None):
    student, start, target, images, labels = problem
    images = images.detach().clone().requires_grad_(True)
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    res = match(student, TensorSource(images, labels), lr, start, target, steps=steps, batch=3, augment=augment,
                generator=torch.Generator().manual_seed(5), memory=memory, loss_fn=loss_fn, keep_steps=keep)
    return res, images.grad, lr.grad


@pytest.mark.parametrize("memory", ["full", "constant"])
def test_the_kept_midpoint_is_the_student_after_those_steps_by_hand(memory):
    problem = _problem()
    student, start, _, images, labels = problem
    res, _, _ = _run(problem, memory, keep=(2,), augment=DSA(),
                     loss_fn=lambda e, s, t, m, points: param_distance(e, s, t))
    g = torch.Generator().manual_seed(5)  # the unroll's own order: the schedule first, then each step's augmentation
    w, augment = start.clone(), DSA()
    for k, idx in enumerate(minibatches(len(images), 3, 4, g), 1):
        w = w.requires_grad_(True)
        ce = cross_entropy(student(w, augment(images[idx], g)), labels[idx])
        w = (w - 0.05 * torch.autograd.grad(ce, w)[0]).detach()
        if k == 2:
            mid = w
    assert list(res.points) == [2]
    torch.testing.assert_close(res.points[2], mid, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(res.end, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("memory", ["full", "constant"])
def test_keeping_points_changes_no_number_when_the_loss_ignores_them(memory):
    problem = _problem()
    plain = _run(problem, memory, augment=DSA())
    kept = _run(problem, memory, keep=(0, 2, 4), augment=DSA(),
                loss_fn=lambda e, s, t, m, points: param_distance(e, s, t, m))
    assert plain[0].loss == kept[0].loss and plain[0].points == {} and sorted(kept[0].points) == [0, 2, 4]
    assert torch.equal(plain[1], kept[1]) and torch.equal(plain[2], kept[2])


def _mid_only(e, s, t, m, points):
    return param_distance(points[2], s, t)


@pytest.mark.parametrize("memory", ["full", "constant"])
def test_a_loss_on_the_midpoint_has_the_gradient_of_the_shorter_unroll(memory):
    """A loss on w_2 of a 4-step unroll trains the images and lr as the 2-step unroll scored at its end (exactly
    in full memory; in constant memory it is TESLA's gradient of that 2-step unroll, the stated approximation)."""
    problem = _problem()
    mid = _run(problem, memory, keep=(2,), loss_fn=_mid_only)
    short = _run(problem, memory, steps=2)
    assert mid[0].loss == pytest.approx(short[0].loss, rel=1e-12)
    torch.testing.assert_close(mid[1], short[1], rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(mid[2], short[2], rtol=1e-9, atol=1e-13)


def test_constant_memory_midpoint_after_one_step_is_exact_and_terms_add_up():
    problem = _problem()
    one = lambda e, s, t, m, points: param_distance(points[1], s, t)  # noqa: E731
    full, const = _run(problem, "full", keep=(1,), loss_fn=one), _run(problem, "constant", keep=(1,), loss_fn=one)
    torch.testing.assert_close(const[1], full[1], rtol=1e-9, atol=1e-13)  # one step: TESLA is exact
    torch.testing.assert_close(const[2], full[2], rtol=1e-9, atol=1e-13)
    both = _run(problem, "constant", keep=(2,), loss_fn=lambda e, s, t, m, points: param_distance(e, s, t)
                + _mid_only(e, s, t, m, points))
    end_only, mid_only = _run(problem, "constant"), _run(problem, "constant", keep=(2,), loss_fn=_mid_only)
    torch.testing.assert_close(both[1], end_only[1] + mid_only[1], rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(both[2], end_only[2] + mid_only[2], rtol=1e-9, atol=1e-13)
    assert not torch.allclose(mid_only[1], end_only[1])  # the midpoint's term is a gradient of its own
    with pytest.raises(ValueError, match="keep_steps"):
        _run(problem, keep=(5,))


# ------------------------------------------------------------------------------------- angle loss
def _law_of_cosines(p: torch.Tensor) -> torch.Tensor:
    """cos of the interior angle at each vertex of the triangle (p0, p1, p2) from its side lengths."""
    a, b, c = (p[1] - p[2]).norm(), (p[0] - p[2]).norm(), (p[0] - p[1]).norm()  # opposite p0, p1, p2
    return torch.stack([(b * b + c * c - a * a) / (2 * b * c), (a * a + c * c - b * b) / (2 * a * c),
                        (a * a + b * b - c * c) / (2 * a * b)])


def _smooth_l1(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1, 0.5 * x * x, x.abs() - 0.5)


def test_angle_loss_is_the_triangles_interior_angles_by_the_law_of_cosines():
    g = torch.Generator().manual_seed(0)
    start, target = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    expert = torch.stack([start, start + 0.3 * (target - start) + torch.randn(50, generator=g, dtype=torch.float64),
                          target])
    student = torch.stack([start, torch.randn(50, generator=g, dtype=torch.float64), 3 * torch.randn(
        50, generator=g, dtype=torch.float64)])
    want = 0.5 * 2 / 27 * _smooth_l1(_law_of_cosines(student) - _law_of_cosines(expert)).sum()
    assert float(angle_loss(student, expert, 0.5)) == pytest.approx(float(want), rel=1e-12)
    assert float(want) > 1e-3
    cos = triangle_cosines(expert).view(3, 3, 3)
    assert cos[0, 1, 2] == pytest.approx(float(_law_of_cosines(expert)[0]), rel=1e-12)
    assert cos[1, 0, 0] == pytest.approx(1.0) and cos[1, 1, 2] == 0.0  # |u|^2 and the zero difference


def test_angle_loss_sees_shape_not_size_or_place():
    g = torch.Generator().manual_seed(1)
    expert = torch.randn(3, 40, generator=g, dtype=torch.float64)
    assert float(angle_loss(expert.clone(), expert, 1.0)) == 0.0
    shifted = 2.5 * expert + torch.randn(40, generator=g, dtype=torch.float64)  # scaled and translated
    assert float(angle_loss(shifted, expert, 1.0)) == pytest.approx(0.0, abs=1e-14)
    moved = expert.clone()
    moved[1] = expert[0] + 0.8 * (expert[2] - expert[0]) + 0.1 * (expert[1] - expert[0])
    assert float(angle_loss(moved, expert, 1.0)) > 1e-3


# ---------------------------------------------------------------------------------- self-paced mask
def test_threshold_grows_every_500_iterations():
    assert [threshold_at(it, 5e-9, 1.5) for it in (0, 499, 500, 999, 1000)] == \
        [5e-9, 5e-9, 1.5 * 5e-9, 1.5 * 5e-9, 1.5 ** 2 * 5e-9]
    assert threshold_at(10000, 1e-10, 1.3) == pytest.approx(1e-10 * 1.3 ** 20)
    assert threshold_at(7, 1.0, 2.0, every=3) == 4.0


def _loss_fn(hp: dict, n: int):
    m = HoPTM()
    m.now = SimpleNamespace(threshold=hp.pop("threshold"), expert_mid=None, terms={})
    state = {"mask": torch.zeros(n)}
    return m.loss_fn(SimpleNamespace(hp=dict(dict(self_paced=True, high_order=False, lamb=0.5), **hp)), state), \
        state, m.now


def test_mask_admits_entries_at_their_iteration_and_keeps_them():
    start, target = torch.zeros(4), torch.tensor([1.0, 2.0, -1.0, 3.0])
    loss_fn, state, now = _loss_fn({"threshold": 0.5}, 4)
    end = torch.tensor([0.5, 2.1, 1.0, 3.0], requires_grad=True)  # e = 0.25, 0.01, 4, 0: entries 0, 1, 3 pass
    loss = loss_fn(end, start, target)
    assert state["mask"].tolist() == [1.0, 1.0, 0.0, 1.0] and now.terms["utilization"] == 0.75
    assert float(loss.detach()) == pytest.approx((0.25 + 0.01 + 0.0) / (1 + 4 + 9))  # counted at once
    loss.backward()
    assert end.grad[2] == 0.0  # an entry outside the set gets no gradient
    loss = loss_fn(torch.tensor([5.0, 5.0, -1.0, 5.0]), start, target)  # only entry 2 passes now
    assert state["mask"].tolist() == [1.0, 1.0, 1.0, 1.0]  # ... and 0, 1, 3 stay
    assert float(loss) == pytest.approx((16 + 9 + 0 + 4) / (1 + 4 + 1 + 9))


def test_mask_of_ones_is_mtt_and_an_empty_mask_gives_zero_not_nan():
    g = torch.Generator().manual_seed(3)
    start, target, end = (torch.randn(30, generator=g) for _ in range(3))
    assert torch.equal(masked_distance(end, start, target, torch.ones(30)), param_distance(end, start, target))
    empty = masked_distance(end.requires_grad_(True), start, target, torch.zeros(30))
    assert float(empty.detach()) == 0.0 and empty.requires_grad
    v = (torch.arange(30) % 2).float()
    other = end.detach().clone()
    other[v == 0] += 10.0  # entries outside the set do not count
    assert float(masked_distance(other, start, target, v)) == \
        pytest.approx(float(masked_distance(end.detach(), start, target, v)))
    assert admit(torch.tensor([1.0, 0.0]), torch.tensor([9.0, 9.0]), 1.0).tolist() == [1.0, 0.0]


def test_segment_bounds_and_expert_midpoint():
    m, task = make_task("hoptm", hp={"min_start_epoch": 1, "max_start_epoch": 3, "expert_epochs": 3},
                        budget="paper")
    experts = type("E", (), {"__len__": lambda self: 2, "snapshot": lambda self, e, t: torch.tensor([float(t)])})()
    seen = set()
    for it in range(60):
        e, s, t = m.segment(it, task, experts)
        assert 1 <= s < 3 and t == s + 3 and float(m.now.expert_mid) == s + 1  # s + M // 2
        seen.add(s)
    assert seen == {1, 2}  # max_start_epoch itself is never drawn
    assert m.keep_steps(task, 80) == (40,) and m.keep_steps(task, 3) == (1,)


# ------------------------------------------------------------------------------------ in the loop
def _same_generator(task):
    task.generator = seeded(0, "distill", "same")
    return task


@pytest.mark.slow
@pytest.mark.parametrize("hp", [dict(self_paced=False), dict(base_threshold=1e3)], ids=["no-mask", "all-admitted"])
def test_with_the_terms_off_it_is_mtt_on_flat_experts_exactly(tmp_path, expert_cache, hp):
    common = dict(iterations=3, max_start_epoch=2, expert_epochs=1, lr_img=100.0, lr_lr=1e-5, batch_syn=4)
    m, task = make_task("hoptm", hp=dict(common, high_order=False, **hp), run_dir=tmp_path / "h",
                        expert_root=expert_cache)
    mtt, mtt_task = make_task("mtt", hp=dict(common, experts="flat"), run_dir=tmp_path / "m",
                              expert_root=expert_cache)
    assert task.hp["syn_steps"] == mtt_task.hp["syn_steps"] and m.recipe(task.hp) == mtt.recipe(mtt_task.hp)
    ours, theirs = m.distill(_same_generator(task)), mtt.distill(_same_generator(mtt_task))
    assert torch.equal(ours.images, theirs.images) and ours.lr == theirs.lr
    rows = log_rows(task, "hoptm")
    assert [r["loss"] for r in rows] == [r["loss"] for r in log_rows(mtt_task, "mtt")]
    assert all(r["angle_loss"] == 0.0 for r in rows)


def test_the_mask_only_grows_over_a_run_and_is_logged(tmp_path, expert_cache):
    m, task = make_task("hoptm", hp={"iterations": 5}, run_dir=tmp_path, expert_root=expert_cache)
    masks = []
    after = m.after_step

    def spy(task, state, step):
        masks.append(state["mask"].clone())
        return after(task, state, step)

    m.after_step = spy
    m.distill(task)
    rows = log_rows(task, "hoptm")
    assert task.hp["threshold_every"] == 1 and [r["threshold"] for r in rows] == \
        pytest.approx([5e-9 * 1.5 ** it for it in range(5)])
    for before, now in zip(masks, masks[1:]):
        assert bool((now >= before).all()) and set(now.unique().tolist()) <= {0.0, 1.0}
    assert 0 < masks[0].mean() < masks[-1].mean()
    assert [r["utilization"] for r in rows] == pytest.approx([float(v.mean()) for v in masks])
    assert all(r["angle_loss"] > 0 and r["loss"] == pytest.approx(r["match_loss"] + r["angle_loss"]) for r in rows)


LEARN_HP = {"iterations": 30, "max_start_epoch": 1, "base_threshold": 1.0}  # all admitted: a comparable loss


@pytest.fixture(scope="module")
def learned(tmp_path_factory, expert_cache):
    synset, task = distill("hoptm", hp=LEARN_HP, run_dir=tmp_path_factory.mktemp("hoptm"), expert_root=expert_cache)
    return synset, log_rows(task, "hoptm")


@pytest.mark.slow
def test_matching_loss_falls(learned):
    rows = learned[1]
    assert falls([r["match_loss"] for r in rows]) and all(r["utilization"] == 1.0 for r in rows)


@pytest.mark.slow
def test_distilled_set_beats_noise(learned):
    synset, data = learned[0], load("tiny28")
    assert small_eval(synset, data, n_models=2, epochs=30) > small_eval(noise_like(synset), data, n_models=2,
                                                                        epochs=30) + 0.1


# ----------------------------------------------------------------------------------- declarations
def test_official_rows_and_budgets():
    path, covid, paper, quick = get_spec("pathmnist"), get_spec("covid19-cxr"), get_budget("paper"), get_budget("quick")
    hp = HoPTM().resolve(path, 10, paper)
    assert [hp[k] for k in ("iterations", "syn_steps", "expert_epochs", "min_start_epoch", "max_start_epoch", "lr_img",
                            "lr_lr", "lr_teacher", "batch_syn", "base_threshold", "growing_factor", "lamb",
                            "threshold_every", "high_order", "init")] == \
        [10000, 80, 2, 0, 4, 10.0, 1e-7, 0.01, 10, 5e-9, 1.5, 0.5, 500, True, "real"]
    assert official_row(path, 100)["base_threshold"] == 5e-8 and official_row(path, 1000)["min_start_epoch"] == 40
    c50 = HoPTM().resolve(covid, 50, paper)
    assert [c50[k] for k in ("expert_epochs", "max_start_epoch", "lr_img", "lr_lr", "lr_teacher", "batch_syn",
                             "base_threshold", "growing_factor", "lamb")] == \
        [3, 20, 100.0, 1e-5, 0.001, 20, 1e-10, 1.6, 1.0]
    assert HoPTM().resolve(covid, 5, paper)["max_start_epoch"] == 4  # spec 1.3's correction of methods.md
    q = HoPTM().resolve(path, 1000, quick)  # 12-epoch experts: [40, 60) -> [7, 10); 20 threshold growths in 200
    assert (q["iterations"], q["min_start_epoch"], q["max_start_epoch"], q["threshold_every"]) == (200, 7, 10, 10)
    assert HoPTM.flat_experts and HoPTM.label_type == "hard" and METHODS.get("hoptm") is HoPTM and HoPTM.summary
    assert "threshold_every" in HoPTM.hp_limits() and "iterations" in HoPTM.hp_limits()
    with pytest.raises(Exception, match="min_start_epoch < max_start_epoch"):
        HoPTM().resolve(path, 10, paper, {"min_start_epoch": 4})
    assert math.isclose(5e-9 * 1.5 ** 20, threshold_at(10000, 5e-9, 1.5))
