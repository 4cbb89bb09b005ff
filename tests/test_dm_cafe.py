"""DM and CAFE: objectives fall, distilled sets beat noise, CAFE's loss terms and loop, DM's siamese pairing."""
from __future__ import annotations

import math

import pytest
import torch
from methodkit import distill, falls, load, log_rows, make_task, noise_like, small_eval

from mddbench.methods.cafe import cafe_loss, discrimination_loss, layer_weights, lr_at
from mddbench.methods.dm import class_views, dm_loss, per_class, siamese_batches
from mddbench.nn.networks import create_network


@pytest.mark.parametrize("method,hp", [
    ("dm", {"iterations": 30}),
    pytest.param("cafe", {"iterations": 12}, marks=pytest.mark.slow),  # from noise, its default initialisation
])
def test_objective_falls_and_beats_noise(method, hp, tmp_path):
    synset, task = distill(method, ipc=2, hp=hp, run_dir=tmp_path)
    iterations = hp["iterations"]
    losses = [row["loss"] for row in log_rows(task, method)]
    assert len(losses) == iterations
    assert falls(losses), losses
    data = load("tiny28")
    acc, noise = small_eval(synset, data, n_models=2, epochs=40), small_eval(noise_like(synset), data, n_models=2,
                                                                             epochs=40)
    assert acc > noise + 0.1, (acc, noise)


# ------------------------------------------------------------------------------------- DM
def test_dm_pairs_real_and_synthetic_with_one_transform():
    """With S = every image of its class, the real batch is a permutation of S: under one shared
    (siamese) transform the mean embeddings agree, so DM's loss vanishes; independent draws do not."""
    strategy = "color_crop_cutout_scale_rotate"  # no flip, which can be the identity
    _, task = make_task("dm", ipc=40, hp={"dsa_strategy": strategy})
    images = task.initial_images("real")  # tiny28 has 40 train images per class: all of them
    net = task.network().requires_grad_(False)
    raw = images.chunk(3)
    reals, syns = siamese_batches(task, class_views(images, 3), 40, task.augment)
    assert all(not torch.allclose(s, r) for s, r in zip(syns, raw))  # the transform did something
    assert float(dm_loss(net, reals, syns)) < 1e-6
    independent = [task.augment(x, task.generator) for x in raw]
    assert float(dm_loss(net, reals, independent)) > 1.0


def test_joint_forward_splits_back_by_each_class_count():
    """BatchNorm nets see all classes in one pass; the split must follow unequal class sizes."""
    g = torch.Generator().manual_seed(1)
    net = create_network("convnet", 1, 2, 28, generator=g)
    batches = [torch.randn(5, 1, 28, 28, generator=g), torch.randn(3, 1, 28, 28, generator=g)]

    def fn(x):
        return [net.embed(x)]

    def mean(outs):
        return outs[0].mean(0)

    with torch.no_grad():
        joint, separate = per_class(fn, batches, True, mean), per_class(fn, batches, False, mean)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(joint, separate))


# ----------------------------------------------------------------------------------- CAFE
def test_cafe_layer_weights_official_at_depth_3():
    assert layer_weights(3) == [0.1, 0.1, 1.0, 1.0]  # f1, f2, f3, f4 of the official code
    assert layer_weights(5) == [0.1, 0.1, 0.1, 0.1, 1.0, 1.0]
    assert layer_weights(1) == [1.0, 1.0]
    net = create_network("convnet", 3, 10, 32)
    shapes = [tuple(m.shape[1:]) for m in net.feature_maps(torch.zeros(1, 3, 32, 32))]
    assert shapes == [(128, 32, 32), (128, 16, 16), (128, 8, 8), (128, 4, 4)]


def test_cafe_loss_weights_each_map_and_adds_output_and_discrimination_terms():
    g = torch.Generator().manual_seed(0)
    net = create_network("convnet", 1, 2, 28, generator=g)
    reals = [torch.randn(5, 1, 28, 28, generator=g), torch.randn(3, 1, 28, 28, generator=g)]
    syns = [torch.randn(2, 1, 28, 28, generator=g), torch.randn(2, 1, 28, 28, generator=g)]
    hp = dict(shallow_weight=0.1, deep_weight=1.0, output_weight=1.0, inner_weight=0.01)
    total, parts = cafe_loss(net, reals, syns, hp)

    with torch.no_grad():
        real_maps = [net.feature_maps(x) for x in reals]
        syn_maps = [net.feature_maps(x) for x in syns]
    align = sum(w * sum(float(((r[l].mean(0) - s[l].mean(0)) ** 2).sum()) for r, s in zip(real_maps, syn_maps))
                for l, w in enumerate([0.1, 0.1, 1.0, 1.0]))
    out_r = torch.stack([r[-1].flatten(1).mean(0) for r in real_maps])
    out_s = torch.stack([s[-1].flatten(1).mean(0) for s in syn_maps])
    logits = torch.cat([r[-1].flatten(1) for r in real_maps]) @ out_s.t()
    disc = 0.01 * float(torch.nn.functional.cross_entropy(logits, torch.tensor([0] * 5 + [1] * 3), reduction="sum"))
    assert parts["align"] == pytest.approx(align, rel=1e-4)
    assert parts["output"] == pytest.approx(float(((out_r - out_s) ** 2).sum()), rel=1e-4)
    assert parts["disc"] == pytest.approx(disc, rel=1e-4)
    assert float(total.detach()) == pytest.approx(align + parts["output"] + disc, rel=1e-4)


def test_discrimination_loss_by_hand():
    """logits = real embeddings x class means: rows (2,1), (0,1), (1,1) with labels 0, 1, 1 give
    CE terms log(1+e^-1), log(1+e^-1), log 2, summed (not averaged), times inner_weight."""
    real = torch.tensor([[2.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = 0.01 * (2 * math.log(1 + math.exp(-1)) + math.log(2))  # = 0.013196706
    assert float(discrimination_loss(real, torch.tensor([0, 1, 1]), means, 0.01)) == pytest.approx(expected, rel=1e-6)


def test_cafe_lr_halves_at_60_80_90_percent():
    assert [lr_at(it, 2000, 0.1) for it in (0, 1199, 1200, 1599, 1600, 1800, 1999)] == \
        pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125, 0.0125])


@pytest.mark.parametrize("lambda_1,lambda_2,outer,inner", [
    (2.0, -1.0, 3, 2 * 3),  # outer settles once its window is full; inner ends as soon as its window is
    (-1.0, 2.0, 4, 3 * 4),  # neither ever triggers: both run to their caps
])
def test_cafe_bilevel_loop_stops_on_windows_or_caps(lambda_1, lambda_2, outer, inner, tmp_path):
    hp = {"iterations": 1, "batch_real": 4, "batch_acc": 2, "window": 3, "max_outer": 4, "max_inner": 4, "lambda_1": lambda_1, "lambda_2": lambda_2}
    _, task = distill("cafe", ipc=1, hp=hp, run_dir=tmp_path)
    row = log_rows(task, "cafe")[0]
    assert (row["outer_steps"], row["inner_epochs"], row["settled"]) == (outer, inner, int(lambda_1 > 1))
