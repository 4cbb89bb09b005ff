"""DC and DSA: the gradient distance, the loop rule, siamese matching, and that distillation works."""
from __future__ import annotations

import methodkit
import pytest
import torch
from methodkit import distill, falls, load, log_rows, make_task, noise_like, small_eval

import mddbench.methods.dc as dc
from mddbench.api.budgets import get_budget
from mddbench.methods.dc import EPS, distance_wb, loops, match_loss
from mddbench.nn.augment import DSA
from mddbench.registry import METHODS

# ConvNet-128 at 28 px costs seconds per DC iteration on two busy cores; at 8 px (depth 1) the same
# tests take a fraction of that, with the same class patterns as tiny28.
DATA = "dc_tiny8"
methodkit._register(DATA, 8, 2, 1, {"train": 40, "val": 10, "test": 20})
# the official get_loops table (DatasetCondensation utils.py), typed in independently of dc.py
OFFICIAL = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
TINY = {"iterations": 12, "batch_real": 16, "inner_loop": 1}


# ---------------------------------------------------------------------------------- distance
def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A 2x3 linear weight gradient pair with row norms 3 and 5 on both sides."""
    real = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
    syn = torch.tensor([[2.0, 1.0, 2.0], [0.0, -3.0, 4.0]])
    return real, syn


def test_distance_wb_by_hand():
    real, syn = _pair()
    # row 1: 1 - 8 / (3*3 + eps); row 2: 1 - 7 / (5*5 + eps)
    expected = (1 - 8 / (9 + EPS)) + (1 - 7 / (25 + EPS))
    assert distance_wb(real, syn).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1 / 9 + 18 / 25, abs=1e-6)


def test_one_d_tensors_contribute_nothing():
    real, syn = _pair()
    bias_real, bias_syn = torch.tensor([1.0, -2.0]), torch.tensor([-5.0, 7.0])  # very different
    assert distance_wb(bias_real, bias_syn).item() == 0.0
    with_bias = match_loss([syn, bias_syn], [real, bias_real], "ours")
    assert with_bias.item() == pytest.approx(distance_wb(real, syn).item(), rel=1e-7)


def test_conv_kernels_are_rows_per_output_channel():
    real, syn = _pair()
    # the same numbers as conv gradients [out=2, in=1, 1, 3] (2D) and [out=2, in=3, 1, 1, 1] (3D)
    for shape in ((2, 1, 1, 3), (2, 3, 1, 1, 1)):
        assert distance_wb(real.reshape(shape), syn.reshape(shape)).item() == pytest.approx(
            distance_wb(real, syn).item(), rel=1e-7)
    # a row-wise distance: swapping the rows of both sides changes nothing, mixing them does
    assert distance_wb(real.flip(0), syn.flip(0)).item() == pytest.approx(distance_wb(real, syn).item(), rel=1e-7)
    assert distance_wb(real, syn.flip(0)).item() != pytest.approx(distance_wb(real, syn).item(), rel=1e-2)


def test_mse_and_cos_over_all_gradients():
    real, syn = _pair()
    b_real, b_syn = torch.tensor([1.0]), torch.tensor([3.0])
    # mse: squared differences of every entry, biases included: 1+1+0+0+36+0 + (3-1)^2
    assert match_loss([syn, b_syn], [real, b_real], "mse").item() == pytest.approx(42.0)
    # cos over the concatenated vectors: dot 8+7+3 = 18, norms sqrt(35) and sqrt(43)
    expected = 1 - 18 / (35 ** 0.5 * 43 ** 0.5 + EPS)
    assert match_loss([syn, b_syn], [real, b_real], "cos").item() == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------- loops
def test_loop_rule_reproduces_the_official_table():
    for ipc, expected in OFFICIAL.items():
        assert loops(ipc) == expected, ipc


def test_loop_rule_between_and_beyond_the_table():
    assert loops(2) == (2, 50)  # the headline setting: ipc 10's inner loop
    assert loops(5) == (5, 50)
    assert loops(15) == (15, 38)  # halfway between 50 and 25, rounded up
    assert loops(100) == (50, 10)  # the later official revision's value
    for ipc in range(2, 120):
        outer, inner = loops(ipc)
        assert outer == min(ipc, 50)
        assert 10 <= inner <= 50
        assert inner >= loops(ipc + 1)[1]  # more images per class, fewer epochs between rounds


def test_presets_set_the_loops_and_budgets_scale_them():
    spec = load("tiny28").spec
    paper = METHODS.get("dc")().resolve(spec, 2, get_budget("paper"))
    assert (paper["outer_loop"], paper["inner_loop"], paper["iterations"], paper["init"]) == (2, 50, 1000, "noise")
    assert METHODS.get("dsa")().resolve(spec, 2, get_budget("paper"))["init"] == "real"
    quick = METHODS.get("dc")().resolve(spec, 10, get_budget("quick"))
    assert (quick["outer_loop"], quick["inner_loop"], quick["iterations"]) == (10, 5, 20)  # 2 % of 1000


# ----------------------------------------------------------------------------- siamese (DSA)
def test_dsa_pairs_every_matching_batch_with_one_shared_draw(monkeypatch):
    applied: list[tuple[int, int]] = []
    pairs: list[tuple[list[tuple[int, int]], int, int]] = []
    apply, pair = DSA.apply, DSA.pair

    def record_apply(self, x, draw):
        applied.append((id(draw), len(x)))
        return apply(self, x, draw)

    def record_pair(self, real, syn, generator):
        start = len(applied)
        out = pair(self, real, syn, generator)
        pairs.append((applied[start:], len(real), len(syn)))
        return out

    monkeypatch.setattr(DSA, "apply", record_apply)
    monkeypatch.setattr(DSA, "pair", record_pair)
    hp = dict(TINY, iterations=2)
    _, task = distill("dsa", dataset=DATA, ipc=2, hp=hp)
    assert len(pairs) == 2 * task.hp["outer_loop"] * task.n_classes  # every class, every matching step
    for draws, n_real, n_syn in pairs:
        assert n_real == 16 and n_syn == 2
        assert draws and len(draws) % 2 == 0
        for (d_real, size_real), (d_syn, size_syn) in zip(draws[::2], draws[1::2]):
            assert d_real == d_syn and (size_real, size_syn) == (n_real, n_syn)


class _Unpaired(METHODS.get("dsa")):
    """A broken DSA: independent draws for the real and the synthetic batch."""

    def matching_views(self, task, real, syn):
        return task.augment(real, task.generator), task.augment(syn, task.generator)


@pytest.mark.parametrize("method,identical", [(METHODS.get("dsa"), True), (_Unpaired, False)])
def test_identical_real_and_synthetic_batches_give_identical_gradients(method, identical, monkeypatch):
    """Feed the synthetic class images as the real batch: siamese views give the same gradients."""
    _, task = make_task("dsa", dataset=DATA, ipc=4)
    m = method()
    images = task.initial_images("real").requires_grad_(True)
    monkeypatch.setattr(task, "real_batch", lambda c, n: images[c * 4:(c + 1) * 4].detach().clone())
    grads = []
    gradients = dc.class_gradients
    monkeypatch.setattr(dc, "class_gradients", lambda *a, **kw: grads.append(gradients(*a, **kw)) or grads[-1])
    net = task.network()
    for _ in range(5):  # several draws, so a lucky op (e.g. a no-op flip) cannot pass the control
        m.matching_loss(task, net, images)
    same = [all(torch.allclose(r, s.detach(), atol=1e-6) for r, s in zip(g_real, g_syn))
            for g_real, g_syn in zip(grads[::2], grads[1::2])]
    assert all(same) if identical else not all(same)


def test_batchnorm_is_set_from_real_images_and_frozen_while_matching(monkeypatch):
    seen = []
    gradients = dc.class_gradients

    def record(net, *a, **kw):
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        seen.append([(m.training, float(m.running_mean.abs().sum()), m.num_batches_tracked.item()) for m in bns])
        return gradients(net, *a, **kw)

    monkeypatch.setattr(dc, "class_gradients", record)
    distill("dc", dataset=DATA, ipc=2, hp={"iterations": 1, "model": "convnet_bn"})
    assert seen and all(seen)
    for layers in seen:
        assert all(not training and moved > 0 for training, moved, _ in layers)
    # round 1 after one stats forward; round 2 after the inner epoch (train mode) and another one
    assert [layers[0][2] for layers in seen] == [1] * 6 + [3] * 6  # 3 classes x (real, synthetic)


# ------------------------------------------------------------------------- distillation works
@pytest.mark.parametrize("method", ["dc", "dsa"])
def test_matching_loss_falls_and_beats_noise(method, tmp_path):
    synset, task = distill(method, dataset=DATA, ipc=2, hp=TINY, run_dir=tmp_path)
    losses = [r["loss"] for r in log_rows(task, method)]
    assert len(losses) == TINY["iterations"]
    assert falls(losses, window=4), losses
    data = load(DATA)
    acc, noise = (small_eval(s, data, n_models=2, epochs=40) for s in (synset, noise_like(synset)))
    assert acc > noise + 0.1, (acc, noise)
