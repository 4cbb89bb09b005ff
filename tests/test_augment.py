"""DSA: siamese pairs, gradients, seeding, per-sample draws, and exact results of the integer ops."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mddbench.errors import ConfigError
from mddbench.nn.augment import DSA, NO_AUGMENT, Draw

OPS = DSA.OPS
SHAPES = {"2d": (6, 3, 14, 12), "3d": (4, 1, 6, 8, 5)}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(shape, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=dtype)


def grid(h: int = 4, w: int = 4) -> torch.Tensor:
    """1, 2, 3, ... row by row: no zeros, so a zero in the output is padding or cut out."""
    return torch.arange(1.0, h * w + 1).view(1, 1, h, w)


# ------------------------------------------------------------------------------ siamese pairs
@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("op", OPS)
def test_pair_applies_one_transform_to_both_batches(op, kind):
    dsa = DSA(op)
    x = images(SHAPES[kind])
    real, syn = dsa.pair(x, x.clone(), gen(3))
    assert torch.equal(real, syn)
    # a smaller synthetic batch gets the very transform its real counterparts got
    real, syn = dsa.pair(x, x[:2].clone(), gen(3))
    assert torch.equal(real[:2], syn)
    # siamese: one draw for the whole batch, so identical images stay identical
    same = x[:1].expand_as(x).clone()
    out = dsa(same, gen(3), siamese=True)
    assert all(torch.equal(out[0], o) for o in out[1:])


# -------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("op", OPS)
def test_gradients_reach_the_images(op, kind):
    dsa = DSA(op)
    real = images(SHAPES[kind], seed=1)
    syn = images(SHAPES[kind], seed=2).requires_grad_(True)
    weights = images(SHAPES[kind], seed=4)
    _, out = dsa.pair(real, syn, gen(5))
    (out * weights).sum().backward()
    assert torch.isfinite(syn.grad).all() and syn.grad.abs().sum() > 0

    # and they are the exact gradients of the (linear) transform
    small = images((2, 2, 5, 6) if kind == "2d" else (2, 1, 4, 5, 3), seed=6, dtype=torch.float64)
    draw = dsa.sample(small, gen(7))[0]
    assert torch.autograd.gradcheck(lambda x: dsa.apply(x, draw), (small.requires_grad_(True),))


# ---------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("op", OPS)
def test_same_seed_same_output_different_seed_different_output(op):
    dsa = DSA(op)
    x = images((8, 1, 16, 16))
    rng_before = torch.get_rng_state()
    a, b, c = dsa(x, gen(0)), dsa(x, gen(0)), dsa(x, gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), rng_before)  # only the explicit generator is used


@pytest.mark.parametrize("op", OPS)
def test_per_sample_mode_varies_across_the_batch(op):
    same = images((1, 1, 16, 16)).expand(8, -1, -1, -1).clone()
    out = DSA(op)(same, gen(0))
    assert not all(torch.equal(out[0], o) for o in out[1:])


def test_modes_choose_one_group_or_all():
    x = images((2, 1, 8, 8))
    chosen = {DSA(mode="S").sample(x, gen(s))[0].op for s in range(40)}
    assert chosen == set(OPS)
    assert [d.op for d in DSA(mode="M").sample(x, gen(0))] == list(OPS)
    assert len(DSA(mode="S").sample(x, gen(0))) == 1


def test_parameter_ranges_are_the_official_ones():
    x = torch.zeros(4000, 1, 16, 16)
    dsa = DSA()
    shift = dsa._sample_crop(len(x), 2, (16, 16), gen(0))["shift"]
    assert set(shift.flatten().tolist()) == {-2, -1, 0, 1, 2}  # 16 * 0.125 + 0.5 -> 2
    offset = dsa._sample_cutout(len(x), 2, (16, 14), gen(0))["offset"]
    assert offset[:, 0].min() == 0 and offset[:, 0].max() == 16  # even cut (8): offsets 0..16
    assert offset[:, 1].min() == 0 and offset[:, 1].max() == 13  # odd cut (7): offsets 0..13
    factor = dsa._sample_scale(len(x), 2, (16, 16), gen(0))["factor"]
    assert factor.min() >= 1 / 1.2 and factor.max() <= 1.2 and factor.shape == (4000, 2)
    angle = dsa._sample_rotate(len(x), 2, (16, 16), gen(0))["angle"]
    assert angle.abs().max() <= math.radians(15) and angle.abs().max() > math.radians(14.9)
    flip = dsa._sample_flip(len(x), 2, (16, 16), gen(0))["flip"]
    assert 0.45 < flip.float().mean() < 0.55


# ------------------------------------------------------------------------ exact small cases
def test_crop_exact():
    x = grid()
    crop = DSA("crop")

    def shifted(h: int, w: int) -> torch.Tensor:
        return crop.apply(x, Draw("crop", {"shift": torch.tensor([[h, w]])}))[0, 0]

    assert torch.equal(shifted(0, 0), x[0, 0])
    assert torch.equal(shifted(1, 0), torch.tensor([[5., 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [0, 0, 0, 0]]))
    assert torch.equal(shifted(0, -1), torch.tensor([[0., 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11], [0, 13, 14, 15]]))
    assert torch.equal(shifted(-2, 2), torch.tensor([[0., 0, 0, 0], [0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0]]))


def test_cutout_exact():
    x = grid()  # 4 px: a 2 x 2 hole centred at the offset
    cut = DSA("cutout")

    def holed(h: int, w: int) -> torch.Tensor:
        return cut.apply(x, Draw("cutout", {"offset": torch.tensor([[h, w]])}))[0, 0]

    assert torch.equal(holed(2, 1), torch.tensor([[1., 2, 3, 4], [0, 0, 7, 8], [0, 0, 11, 12], [13, 14, 15, 16]]))
    assert torch.equal(holed(0, 4), torch.tensor([[1., 2, 3, 0], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]))


def test_flip_exact():
    x = torch.cat([grid(), grid() + 16])
    out = DSA("flip").apply(x, Draw("flip", {"flip": torch.tensor([True, False])}))
    assert torch.equal(out[0, 0], torch.tensor([[4., 3, 2, 1], [8, 7, 6, 5], [12, 11, 10, 9], [16, 15, 14, 13]]))
    assert torch.equal(out[1], x[1])
    volume = images((1, 1, 3, 4, 5))
    flipped = DSA("flip").apply(volume, Draw("flip", {"flip": torch.tensor([True])}))
    assert torch.equal(flipped, volume.flip(-1))  # 3D: the W axis, as in 2D


def test_color_scale_rotate_exact():
    x = images((2, 3, 6, 6))
    color = DSA("color")
    neutral = {"b": torch.tensor([0.5]), "s": torch.tensor([0.5]), "c": torch.tensor([0.5])}
    torch.testing.assert_close(color.apply(x, Draw("color", neutral)), x)
    torch.testing.assert_close(color.apply(x, Draw("color", {**neutral, "b": torch.tensor([1.0])})), x + 0.5)
    grey = x.mean(1, keepdim=True).expand_as(x)
    torch.testing.assert_close(color.apply(x, Draw("color", {**neutral, "s": torch.tensor([0.0])})), grey)

    torch.testing.assert_close(DSA("scale").apply(x, Draw("scale", {"factor": torch.ones(1, 2)})), x)
    square = grid()
    quarter = DSA("rotate").apply(square, Draw("rotate", {"angle": torch.tensor([math.pi / 2])}))
    torch.testing.assert_close(quarter, torch.rot90(square, -1, (2, 3)))
    volume = images((1, 2, 3, 5, 5))
    turned = DSA("rotate").apply(volume, Draw("rotate", {"angle": torch.tensor([math.pi / 2])}))
    torch.testing.assert_close(turned, torch.rot90(volume, -1, (3, 4)))  # every axial slice turns alike


# ------------------------------------------------------------- against the official formulas
def official_crop(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """DiffAugment's rand_crop index grid (pad by one, clamp(i + shift + 1)), in n dimensions."""
    padded = F.pad(x, (1, 1) * (x.ndim - 2))
    out = []
    for b in range(len(x)):
        index = [(torch.arange(n) + int(s) + 1).clamp(0, n + 1) for n, s in zip(x.shape[2:], shift[b])]
        out.append(padded[b][(slice(None),) + tuple(torch.meshgrid(*index, indexing="ij"))])
    return torch.stack(out)


def official_cutout(x: torch.Tensor, offset: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """DiffAugment's rand_cutout mask (a clamped box scattered to zero), in n dimensions."""
    size = x.shape[2:]
    cut = [int(n * ratio + 0.5) for n in size]
    mask = torch.ones(len(x), *size)
    for b in range(len(x)):
        box = [(torch.arange(c) + int(o) - c // 2).clamp(0, n - 1) for c, o, n in zip(cut, offset[b], size)]
        mask[b][torch.meshgrid(*box, indexing="ij")] = 0
    return x * mask.unsqueeze(1)


@pytest.mark.parametrize("kind", SHAPES)
def test_crop_and_cutout_match_the_official_formulas(kind):
    x = images((32,) + SHAPES[kind][1:])
    dsa = DSA("crop_cutout", mode="M")
    crop, cutout = dsa.sample(x, gen(0))
    torch.testing.assert_close(dsa.apply(x, crop), official_crop(x, crop.params["shift"]), rtol=0, atol=0)
    torch.testing.assert_close(dsa.apply(x, cutout), official_cutout(x, cutout.params["offset"]), rtol=0, atol=0)


# --------------------------------------------------------------------------------- identity
def test_strategy_none_is_the_identity():
    x = images((3, 1, 8, 8))
    g = gen(0)
    before = g.get_state()
    for dsa in (DSA("none"), DSA(""), NO_AUGMENT):
        assert dsa(x, g) is x
        real, syn = dsa.pair(x, x[:1], g)
        assert real is x and torch.equal(syn, x[:1])
    assert torch.equal(g.get_state(), before)  # no draw consumed


def test_bad_strategy_and_mode():
    with pytest.raises(ConfigError, match="unknown DSA op.*'blur'.*known: color, crop"):
        DSA("crop_blur")
    with pytest.raises(ConfigError, match="mode"):
        DSA(mode="X")
