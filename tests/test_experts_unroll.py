"""Expert trajectories (recipes, GSAM, the cache) and the one unroll engine."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from methodkit import load

import mddbench.trajectory.experts as experts_mod
from mddbench.api.budgets import get_budget
from mddbench.nn.augment import DSA
from mddbench.nn.networks import create_network
from mddbench.nn.training import gsam_step
from mddbench.nn.unroll import Student, TensorSource, match, minibatches, param_distance
from mddbench.trajectory.experts import FLAT_RECIPE, MTT_RECIPE, ExpertProvider, cache_key


# ------------------------------------------------------------------------------------- unroll
def _tiny_problem(dtype=torch.float64):
    net = create_network("convnet", 1, 3, 8, 2, width=4, depth=1, generator=torch.Generator().manual_seed(1))
    student = Student(net.to(dtype))
    g = torch.Generator().manual_seed(2)
    start = torch.randn(student.size, generator=g, dtype=dtype) * 0.3
    target = start + 0.05 * torch.randn(student.size, generator=g, dtype=dtype)
    images = torch.randn(6, 1, 8, 8, generator=g, dtype=dtype)
    labels = torch.arange(3).repeat_interleave(2)
    return student, start, target, images, labels


def _loss(student, start, target, images, labels, lr, memory="full"):
    images = images.detach().clone().requires_grad_(True)
    lr = torch.tensor(float(lr), dtype=images.dtype, requires_grad=True)
    res = match(student, TensorSource(images, labels), lr, start, target, steps=4, batch=3, augment=DSA(),
                generator=torch.Generator().manual_seed(5), memory=memory)
    return res.loss, images.grad, lr.grad


def test_unroll_gradient_matches_finite_differences():
    student, start, target, images, labels = _tiny_problem()
    loss, g_img, g_lr = _loss(student, start, target, images, labels, 0.05)
    eps = 1e-6
    for k in range(0, images.numel(), 23):  # a spread of pixels
        e = torch.zeros(images.numel(), dtype=images.dtype)
        e[k] = eps
        e = e.view_as(images)
        fd = (_loss(student, start, target, images + e, labels, 0.05)[0]
              - _loss(student, start, target, images - e, labels, 0.05)[0]) / (2 * eps)
        assert fd == pytest.approx(float(g_img.view(-1)[k]), rel=1e-4, abs=1e-9)
    fd_lr = (_loss(student, start, target, images, labels, 0.05 + eps)[0]
             - _loss(student, start, target, images, labels, 0.05 - eps)[0]) / (2 * eps)
    assert fd_lr == pytest.approx(float(g_lr), rel=1e-5)


def test_constant_memory_unroll_same_loss_close_gradient():
    student, start, target, images, labels = _tiny_problem()
    full = _loss(student, start, target, images, labels, 0.05, "full")
    const = _loss(student, start, target, images, labels, 0.05, "constant")
    assert const[0] == pytest.approx(full[0], rel=1e-10)  # the same forward pass
    cos = torch.nn.functional.cosine_similarity(full[1].view(-1), const[1].view(-1), dim=0)
    assert 0.95 < float(cos) < 1.0  # TESLA's gradient approximates, it is not exact


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() touches torch's deprecated aliases
@pytest.mark.parametrize("memory", ["full", "constant"])
def test_unroll_keeps_nothing_alive_and_measures_its_graph(memory):
    """Repeated matching iterations leave no parameter-sized tensor behind (a saved-tensor hook
    census once leaked the start parameters every iteration); the graph the unroll reports grows
    with the steps in full mode and stays flat in TESLA's constant mode."""
    import gc

    student, start, target, images, labels = _tiny_problem(torch.float32)
    images.requires_grad_(True)
    lr = torch.tensor(0.05, requires_grad=True)

    def alive() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.numel() == student.size)

    before = alive()
    mb = {}
    for steps in (2, 4, 8):
        mb[steps] = match(student, TensorSource(images, labels), lr, start, target, steps=steps, batch=3,
                          augment=DSA(), generator=torch.Generator().manual_seed(5), memory=memory).graph_mb
    assert alive() == before
    if memory == "full":
        assert mb[4] == pytest.approx(2 * mb[2], rel=0.1) and mb[8] == pytest.approx(4 * mb[2], rel=0.1)
    else:
        assert mb[2] > 0 and mb[8] == pytest.approx(mb[2], rel=0.05)


def test_normalised_loss_is_zero_when_the_student_reproduces_the_expert():
    student, start, _, images, labels = _tiny_problem()
    lr = torch.tensor(0.05, dtype=images.dtype)
    ref = match(student, TensorSource(images.clone().requires_grad_(True), labels), lr, start, start + 1.0, steps=4,
                batch=3, augment=DSA(), generator=torch.Generator().manual_seed(5))
    same = match(student, TensorSource(images.clone().requires_grad_(True), labels), lr, start, ref.end, steps=4,
                 batch=3, augment=DSA(), generator=torch.Generator().manual_seed(5))
    assert same.loss == 0.0
    other = match(student, TensorSource(images.clone().requires_grad_(True), labels), lr, start, ref.end, steps=3,
                  batch=3, augment=DSA(), generator=torch.Generator().manual_seed(5))
    assert other.loss > 0.0


def test_param_distance_and_mask_by_hand():
    end, start, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0])
    assert float(param_distance(end, start, target)) == pytest.approx((0 + 1 + 4) / 3)
    assert float(param_distance(end, start, target, torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(1 / 2)


def test_minibatch_schedule_cycles_through_the_set():
    batches = minibatches(5, 2, 6, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [1, 2, 2, 1, 2, 2]  # MTT pops chunks from the end of a permutation
    assert sorted(torch.cat(batches[:3]).tolist()) == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------------------- GSAM
def test_gsam_step_on_a_quadratic_moves_as_the_formula_says():
    A = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    w0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    rho, alpha, lr = 0.1, 0.3, 0.05
    for adaptive in (False, True):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.SGD([w], lr=lr)
        def backward(w=w):  # what the training loop hands a step: fills .grad, returns the loss
            loss = 0.5 * w @ A @ w
            loss.backward()
            return loss.detach()

        gsam_step([w], backward, opt, rho, alpha, adaptive=adaptive, eps=0.0)
        g = A @ w0
        scale = (w0 * w0) if adaptive else torch.ones(2, dtype=torch.float64)
        norm = ((w0.abs() * g).norm() if adaptive else g.norm())
        e = rho * scale * g / norm
        gp = A @ (w0 + e)
        vertical = g - (g @ gp) / (gp @ gp) * gp
        expected = w0 - lr * (gp - alpha * vertical)
        assert torch.allclose(w.detach(), expected, atol=1e-12), adaptive


# -------------------------------------------------------------------------------------- cache
def test_cache_key_changes_with_every_ingredient():
    data = load("tiny28")
    base = cache_key(data, MTT_RECIPE)
    variants = [replace(MTT_RECIPE, **{f: v}) for f, v in (
        ("model", "lenet"), ("lr", 0.02), ("momentum", 0.9), ("weight_decay", 1e-4), ("batch", 128),
        ("dsa_strategy", "none"), ("epochs", 7), ("seed", 1), ("optimizer", "gsam"))]
    keys = {cache_key(data, r) for r in variants}
    assert base not in keys and len(keys) == len(variants)
    assert cache_key(data, replace(FLAT_RECIPE, alpha=1.0)) != cache_key(data, FLAT_RECIPE)
    assert cache_key(data, replace(FLAT_RECIPE, rho=0.05)) != cache_key(data, FLAT_RECIPE)
    assert cache_key(data, replace(MTT_RECIPE, n_experts=7)) == base  # more experts extend the same buffer
    other = load("tiny112")
    assert cache_key(other, MTT_RECIPE) != base
    shifted = replace(data, mean=(0.1,))
    assert cache_key(shifted, MTT_RECIPE) != base
    changed = replace(data, checksum="0" * 32)
    assert cache_key(changed, MTT_RECIPE) != base


def test_second_run_reuses_the_cache_and_building_resumes_per_expert(tmp_path, monkeypatch):
    data = load("tiny28")
    budget = get_budget("smoke")
    provider = ExpertProvider(tmp_path, data, budget, torch.device("cpu"), progress=False)
    recipe = replace(MTT_RECIPE, n_experts=1, epochs=2)
    first = provider(recipe)
    assert len(first) == 1 and first.epochs == 2
    folder = provider.folder(recipe)
    assert (folder / "meta.json").exists() and "test_acc" in first.meta["experts"]["0"]
    assert first.meta["experts"]["0"]["built_on"] == "cpu"  # GPU-built experts say so in the cache

    calls = []
    real_train = experts_mod.train_expert
    monkeypatch.setattr(experts_mod, "train_expert", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    again = ExpertProvider(tmp_path, data, budget, torch.device("cpu"), progress=False)(recipe)
    assert calls == [] and torch.equal(again.trajectories[0], first.trajectories[0])
    more = ExpertProvider(tmp_path, data, budget, torch.device("cpu"), progress=False)(replace(recipe, n_experts=2))
    assert calls == [1] and len(more) == 2  # only the missing expert is trained
    assert torch.equal(more.trajectories[0], first.trajectories[0])


@pytest.mark.slow
def test_experts_learn(tmp_path):
    data = load("tiny28")
    traj = ExpertProvider(tmp_path, data, get_budget("smoke"), torch.device("cpu"), progress=False)(
        replace(FLAT_RECIPE, n_experts=1, epochs=3))
    assert traj.meta["experts"]["0"]["test_acc"] > 0.6  # 3 classes: chance is 1/3
    assert not torch.equal(traj.snapshot(0, 0), traj.final(0))
