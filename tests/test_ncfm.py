"""NCFM (spec new_methods.md 2.8): the CF discrepancy against an independent complex-valued computation, its
zero, symmetry and invariances, multi-formation decoding, the interpolated feature net, the min-max step's
signs, the loss falling, a distilled set beating noise, resume with the sampling net, limits and 3D."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from methodkit import distill, falls, interrupted_at, load, log_rows, make_task, noise_like, small_eval

from mddbench.errors import ConfigError
from mddbench.methods.ncfm import (
    NCFM,
    Normaliser,
    SamplingNet,
    cf_discrepancy,
    cf_match_loss,
    decode,
    interpolate,
    match_step,
    mix_init,
)
from mddbench.nn.networks import create_network
from mddbench.run.pipeline import set_problems

HP = dict(NCFM.defaults)


def features(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def complex_cf_distance(real: torch.Tensor, syn: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1/sqrt 2) mean_k |Phi_r(t_k) - Phi_s(t_k)| with complex tensors, in float64 (independent of the method)."""
    def phi(f):
        return torch.exp(1j * (f.double() @ t.double().T)).mean(0)
    return (phi(real) - phi(syn)).abs().mean() / math.sqrt(2)


# ----------------------------------------------------------------------------- the discrepancy
def test_defaults_weigh_amplitude_and_phase_equally():
    assert (HP["alpha"], HP["beta"], HP["loss_scale"], HP["num_freqs"]) == (0.5, 0.5, 300.0, 4096)
    assert HP["sampling_net"] is False and HP["factor"] == 2 and HP["init"] == "mix"


@pytest.mark.parametrize("n_real,n_syn", [(32, 8), (5, 5), (64, 3)])
def test_loss_is_the_mean_cf_modulus_over_sqrt2(n_real, n_syn):
    real, syn = F.normalize(features(n_real), dim=1), F.normalize(features(n_syn, seed=1), dim=1)
    t = features(500, seed=2)
    got = cf_discrepancy(real, syn, t, HP["alpha"], HP["beta"])
    assert float(got) == pytest.approx(float(complex_cf_distance(real, syn, t)), rel=1e-5)
    # match_loss: loss_scale x the discrepancy of L2-normalised rows, whatever the rows' scale
    raw_real, raw_syn = features(n_real) * 7.0, features(n_syn, seed=1) * 0.1
    assert float(cf_match_loss(raw_real, raw_syn, t, HP)) == pytest.approx(300 * float(got), rel=1e-5)


def test_amplitude_and_phase_weights_are_separate_terms():
    real, syn, t = features(20), features(20, seed=1), features(200, seed=2)
    amp = cf_discrepancy(real, syn, t, 1.0, 0.0)
    phase = cf_discrepancy(real, syn, t, 0.0, 1.0)
    both = cf_discrepancy(real, syn, t, 0.5, 0.5)
    assert 0 < float(amp) < float(both) * math.sqrt(2) and 0 < float(phase)
    # mean_k sqrt(.) is concave: the equal mix is at least the mean of the two halves' square roots
    assert float(both) >= (float(amp) + float(phase)) / 2 * math.sqrt(0.5) - 1e-6


def test_zero_for_identical_sets_positive_symmetric_and_permutation_invariant():
    real, syn, t = features(30), features(10, seed=1), features(300, seed=2)
    # the official formula's phase term, 2(|Phi_r||Phi_s| - Re Re - Im Im), cancels to rounding error: float64
    # reaches the spec's 1e-5, float32 (the method's dtype) about sqrt(float32 eps) times |Phi|
    assert float(cf_discrepancy(real.double(), real.double().clone(), t.double())) <= 1e-5
    assert float(cf_discrepancy(real, real.clone(), t)) <= 1e-3
    d = float(cf_discrepancy(real, syn, t))
    assert d > 0.01
    assert float(cf_discrepancy(syn, real, t)) == pytest.approx(d, rel=1e-6)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    assert float(cf_discrepancy(real[perm], syn, t)) == pytest.approx(d, rel=1e-5)


def test_loss_falls_as_more_synthetic_rows_are_real_copies():
    real, t = F.normalize(features(8), dim=1), features(300, seed=2)
    noise = F.normalize(features(8, seed=5), dim=1)
    values = [float(cf_discrepancy(real, torch.cat([real[:k], noise[k:]]), t)) for k in range(9)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] <= 1e-3 and values[0] > 0.1


# ----------------------------------------------------------------------------- multi-formation
def test_decode_cuts_a_2x2_grid_and_upsamples_each_cell():
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    out = decode(x, 2)
    assert out.shape == (12, 2, 8, 8)
    cells = [x[..., :4, :4], x[..., :4, 4:], x[..., 4:, :4], x[..., 4:, 4:]]  # cell-major, rows then columns
    for k, cell in enumerate(cells):
        expected = F.interpolate(cell, size=(8, 8), mode="bilinear", align_corners=False)
        assert torch.allclose(out[3 * k:3 * (k + 1)], expected)
    # a constant cell stays that constant: the 2x2 mosaic of constant cells comes back cell by cell
    mosaic = torch.zeros(1, 1, 8, 8)
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        mosaic[..., 4 * i:4 * i + 4, 4 * j:4 * j + 4] = k / 4
    assert torch.allclose(decode(mosaic, 2), torch.arange(4.).div(4).view(4, 1, 1, 1).expand(4, 1, 8, 8))
    assert torch.equal(decode(x, 1), x)


def test_decode_pads_odd_sizes_with_grey_and_cuts_3d_into_eight():
    out = decode(torch.zeros(1, 1, 5, 5), 2)  # padded to 6: the last cell holds a row and column of 0.5
    assert torch.equal(out[0], torch.zeros(1, 5, 5)) and float(out[3].max()) > 0.1
    vol = torch.rand(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    out3 = decode(vol, 2)
    assert out3.shape == (16, 1, 6, 6, 6)
    assert torch.allclose(out3[2:4], F.interpolate(vol[..., :3, :3, 3:], size=(6, 6, 6), mode="trilinear"))


def test_mix_init_puts_resized_real_images_in_the_cells():
    real = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(0))  # ipc 2 x factor^2 4
    stored = mix_init(real, 2, 2)
    assert stored.shape == (2, 1, 6, 6)
    assert torch.equal(stored[1, :, :3, 3:], F.interpolate(real[3:4], size=(3, 3))[0])  # cell 1 of image 1
    assert torch.equal(stored[0, :, 3:, 3:], F.interpolate(real[6:7], size=(3, 3))[0])  # cell 3 of image 0


def test_interpolated_feature_net_is_init_at_1_and_final_at_0():
    init, final = features(1, 50)[0], features(1, 50, seed=1)[0]
    assert torch.equal(interpolate(init, final, 1.0), init)
    assert torch.equal(interpolate(init, final, 0.0), final)
    assert torch.allclose(interpolate(init, final, 0.25), 0.25 * init + 0.75 * final)


# ----------------------------------------------------------------------------- steps
def _step_parts(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    net = create_network("convnet", 1, 3, 28, generator=g).requires_grad_(False)
    pixels = torch.rand(3 * 2, 1, 28, 28, generator=g).requires_grad_(True)  # 3 classes x ipc 2
    real = torch.randn(16, 1, 28, 28, generator=g)
    return g, net, pixels, real, Normaliser((0.5,), (0.25,), 2, torch.device("cpu"))


def test_repeated_match_steps_lower_the_loss_on_a_fixed_batch():
    g, net, pixels, real, norm = _step_parts()
    t = torch.randn(256, 1152, generator=g)
    opt = torch.optim.AdamW([pixels], lr=1e-2, weight_decay=5e-4)
    losses = [float(match_step(pixels, 1, 3, real, net, t, HP, norm, opt)) for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0], losses
    assert pixels.grad is not None and float(pixels.grad[:2].abs().sum()) == 0  # only class 1's images had a gradient


def test_min_max_step_lowers_the_loss_for_the_images_and_raises_it_for_psi():
    g, net, pixels, real, norm = _step_parts(1)
    hp = dict(HP, factor=2)
    psi = SamplingNet.create(1152, 32, 1.0, g, torch.device("cpu")).train()
    noise = psi.noise(g, torch.device("cpu"))
    opt = torch.optim.AdamW([pixels], lr=1e-3, weight_decay=0.0)
    opt_psi = torch.optim.SGD(psi.parameters(), lr=1e-3, momentum=0.5)
    before_pixels, before_psi = pixels.detach().clone(), copy.deepcopy(psi)

    def loss(p, s):
        with torch.no_grad():
            syn = norm(decode(p.chunk(3)[0], 2))
            return float(cf_match_loss(net.embed(real), net.embed(syn), s(noise), hp))

    start = loss(before_pixels, before_psi)
    got = float(match_step(pixels, 0, 3, real, net, None, hp, norm, opt, psi=psi, psi_noise=noise, opt_psi=opt_psi))
    assert got == pytest.approx(start, rel=1e-5)  # psi saw the pre-step images
    assert loss(pixels.detach(), before_psi) < start  # images: descent
    assert loss(before_pixels, psi) > start  # psi: ascent
    out = psi(noise)
    assert out.shape == (32, 1152) and torch.equal(out[:2], out[2:4])  # 2 distinct rows, tiled 16 times
    assert not torch.equal(out[0], out[1])


# ----------------------------------------------------------------------------- the method
def test_distilled_set_is_the_decoded_set_and_passes_the_runner_checks(tmp_path, expert_cache):
    m, task = make_task("ncfm", ipc=2, hp={"iterations": 2}, run_dir=tmp_path, expert_root=expert_cache)
    synset = m.distill(task)
    assert synset.images.shape == (24, 1, 28, 28) and m.images_per_class(task) == 8
    assert synset.labels.bincount().tolist() == [8, 8, 8]
    assert set_problems(m, task, synset) == []
    assert len(log_rows(task, "ncfm")) == 2


@pytest.mark.slow
def test_loss_falls_and_the_set_beats_noise(tmp_path, expert_cache):
    synset, task = distill("ncfm", ipc=2, hp={"iterations": 20}, run_dir=tmp_path, expert_root=expert_cache)
    losses = [r["match_loss"] for r in log_rows(task, "ncfm")]
    assert len(losses) == 20 and falls(losses), losses
    data = load("tiny28")
    acc = small_eval(synset, data, n_models=2, epochs=40)
    noise = small_eval(noise_like(synset), data, n_models=2, epochs=40)
    assert acc > noise + 0.1, (acc, noise)


@pytest.mark.slow
def test_resume_with_the_sampling_net_equals_an_uninterrupted_run(tmp_path, monkeypatch, expert_cache):
    hp = {"iterations": 5, "sampling_net": True, "t_batchsize": 32}
    kw = dict(hp=hp, expert_root=expert_cache, checkpoint_every=2)
    full, _ = distill("ncfm", run_dir=tmp_path / "a", **kw)
    interrupted_at(3, monkeypatch, lambda: distill("ncfm", run_dir=tmp_path / "b", **kw))
    resumed, _ = distill("ncfm", run_dir=tmp_path / "b", **kw)
    assert torch.equal(full.images, resumed.images) and torch.equal(full.labels, resumed.labels)


@pytest.mark.parametrize("key,value,message", [
    ("alpha", 1.5, "alpha must be in"), ("num_freqs", 0, "num_freqs must be in"), ("factor", 0, "factor must be in"),
    ("lr_img", 0.0, "lr_img must be > 0"), ("iter_calib", -1, "iter_calib must be in"),
    ("t_batchsize", 16, "t_batchsize must be in"), ("t_batchsize", 40, "multiple of 16"),
    ("optimizer_img", "lbfgs", "not one of adamw"), ("init", "kmeans", "not one of mix"),
    ("plateau_factor", 1.0, "plateau_factor must be in"), ("num_premodel", 0, "num_premodel must be in")])
def test_out_of_range_options_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        make_task("ncfm", hp={key: value})


def test_both_weights_zero_is_refused():
    with pytest.raises(ConfigError, match="alpha \\+ beta"):
        make_task("ncfm", hp={"alpha": 0.0, "beta": 0.0})


def test_3d_volumes_decode_into_eight_per_stored_volume(tmp_path, expert_cache):
    m, task = make_task("ncfm", dataset="tiny3d", ipc=1, hp={"iterations": 2}, run_dir=tmp_path,
                        expert_root=expert_cache)
    synset = m.distill(task)
    assert synset.images.shape == (24, 1, 12, 12, 12) and synset.labels.bincount().tolist() == [8, 8, 8]
    assert set_problems(m, task, synset) == [] and torch.isfinite(synset.images).all()
