"""NCFM: Neural Characteristic Function Matching (Wang et al., CVPR 2025), spec new_methods.md section 2.

A distribution-matching method (the nearest relative is DM, methods/dm.py). Per iteration
(official ``condenser/Condenser.py`` L186-310): pick one of ``num_premodel`` pretrained ConvNets
(its init and final parameters), take the feature net init*l + final*(1-l) with l ~ U(0,1)
(``utils/utils.py`` L432-456); clamp the stored pixels to [0,1]; then, per class, one image step
on the CF discrepancy (2.1, :func:`cf_discrepancy`) between L2-normalised features of a real
batch and of the class's *decoded* synthetic images, both through one siamese DSA draw, times
``loss_scale`` 300 (``NCFM/NCFM.py`` L67-79); then ``iter_calib`` rounds of one image step per class
on ``calib_weight * CE(final(aug(decoded S_c)), c)`` (``condenser/compute_loss.py``); a plateau
scheduler (factor 0.5, patience 500) on the image lr is fed the mean per-class loss. One
"iteration" is therefore ``(1 + iter_calib) * classes`` optimiser steps (spec 2.7.7).

The CF discrepancy (``CFLossFunc``, ``NCFM/NCFM.py`` L6-64): for frequencies t_k, the empirical
characteristic function Phi(t) = mean_i exp(j<t, f_i>); amplitude term (|Phi_r| - |Phi_s|)^2,
phase term 2(|Phi_r||Phi_s| - Re_r Re_s - Im_r Im_s) clamped at 1e-12; loss = mean_k
sqrt(alpha * amp + beta * phase). At alpha = beta = 0.5 this is mean_k |Phi_r - Phi_s| / sqrt(2).
Without the sampling net the frequencies are a fresh t ~ N(0, I) of ``num_freqs`` x D per class.

The sampling network psi (``NCFM/SampleNet.py``, spec 2.2) is **off in every shipped config**, so
it is off here (``sampling_net=false``); ``sampling_net=true`` turns on the min-max: psi maps
``t_batchsize // 16`` white-noise rows through 3 x (Linear -> BatchNorm1d -> LeakyReLU/LeakyReLU/Tanh)
and tiles them to ``t_batchsize`` frequencies; per class, the images step down and psi steps up
(SGD lr 1e-3, momentum 0.5) on gradients of the same forward pass.

Multi-formation (IDC-style, ``condenser/decode.py``, spec 2.3): ``ipc`` images per class are stored
at full resolution as pixels in [0,1] (unnormalised); each is cut into a factor x factor grid (pad
0.5 where the size is not a multiple) and every patch is upsampled (bilinear, align_corners=False)
back to full size, so the set that trains -- here and in the evaluation -- has factor^2 * ipc
images per class from the storage of ipc. The returned :class:`SyntheticSet` holds those decoded
images (normalised with the dataset's statistics, as every set is), and :meth:`NCFM.images_per_class`
declares factor^2 * ipc; ``factor=1`` is the budget-neutral variant (no multi-formation). ``init=mix``
(official default) fills each stored image with factor^2 real images of its class, each resized
(nearest) to one grid cell.

Deviations from the official code (recorded in docs/methods.md):
- Evaluation: our protocol only (the decoded factor^2 * ipc images with hard labels, the shared
  epochs, optimiser and DSA, final-epoch accuracy). The official evaluation (2000 epochs, AdamW,
  CutMix, best test accuracy over checks, optional teacher soft labels, spec 2.5) is not run.
- Feature nets: the official 20 ConvNets pretrained for 60 epochs (SGD 0.01, momentum 0.9, wd 5e-4,
  batch 128, MultiStepLR, DiffAug color_crop + CutMix) are the suite's expert cache
  (mddbench/trajectory/experts.py) with that recipe's optimiser, batch and DSA 'color_crop', but a
  constant lr and no CutMix; init = the expert's epoch 0, final = its last epoch. Their number and
  epochs follow the budget (``num_premodel``, ``premodel_epochs``).
- Augmentation: the shared DSA with ``color_crop_cutout`` applied as all ops in turn (mode 'M'),
  which is the official DiffAug's order for that strategy (colour, one of the rest: crop, cutout);
  magnitudes are the DSA ones.
- Randomness from the task's seeded generator (official runs are unseeded, seed 0).
- With psi on, its width is the actual feature size (official: hard-coded 2048), and the second
  plateau scheduler that the official code attaches to the image optimiser is not created.
- A class with fewer than ``batch_real`` images contributes all of them (spec 2.7.8); ``init=mix`` with
  fewer than factor^2 * ipc images in a class repeats images.
- 3D volumes: the grid is factor^3 cells and the upsampling trilinear (the official code is 2D only).

Budgets: ``quick`` runs the shared 2 % of the official 20000 iterations (400) with 128 real images per
class and ``min(num_premodel, budget experts)`` feature nets of the budget's expert epochs; ``medium``
10 % with the budget's expert count and epochs; ``smoke`` 10 iterations, 16 real images, 512
frequencies and 2 nets.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from mddbench.api.budgets import Budget, official_share
from mddbench.api.loop import distill_loop
from mddbench.api.method import Method, Task
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.limits import AT_LEAST_1, FRACTION, LARGEST, MOMENTUM, NON_NEGATIVE, POSITIVE, Limit
from mddbench.memory import in_chunks, micro_batch
from mddbench.nn.augment import DSA
from mddbench.nn.losses import cross_entropy
from mddbench.nn.networks import init_parameters
from mddbench.registry import register_method
from mddbench.trajectory.experts import ExpertRecipe, Trajectories

PHASE_FLOOR = 1e-12  # NCFM/NCFM.py L58: loss_pha.clamp(min=1e-12)
OPTIMIZERS = ("adamw", "adam", "sgd")
INITS = ("mix", "real", "noise")


# ------------------------------------------------------------------------------- the discrepancy
def empirical_cf(features: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Re, Im) of Phi(t_k) = mean_i exp(j <t_k, f_i>) for every row t_k of ``t``: two (K,) tensors."""
    arg = t @ features.T  # (K, B)
    return arg.cos().mean(1), arg.sin().mean(1)


def cf_discrepancy(real: torch.Tensor, syn: torch.Tensor, t: torch.Tensor, alpha: float = 0.5,
                   beta: float = 0.5) -> torch.Tensor:
    """mean_k sqrt(alpha * amplitude_k + beta * phase_k) between two feature sets (``CFLossFunc.forward``)."""
    re_r, im_r = empirical_cf(real, t)
    re_s, im_s = empirical_cf(syn, t)
    norm_r, norm_s = torch.sqrt(re_r * re_r + im_r * im_r), torch.sqrt(re_s * re_s + im_s * im_s)
    amplitude = (norm_r - norm_s) ** 2
    phase = (2 * (norm_r * norm_s - re_s * re_r - im_s * im_r)).clamp(min=PHASE_FLOOR)
    return torch.sqrt(alpha * amplitude + beta * phase).mean()


def cf_match_loss(real: torch.Tensor, syn: torch.Tensor, t: torch.Tensor, hp: dict[str, Any]) -> torch.Tensor:
    """``match_loss`` (NCFM/NCFM.py L67-79): ``loss_scale`` x the discrepancy of the L2-normalised rows."""
    return hp["loss_scale"] * cf_discrepancy(F.normalize(real, dim=1), F.normalize(syn, dim=1), t,
                                             hp["alpha"], hp["beta"])


def gaussian_frequencies(n: int, dim: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A fresh t ~ N(0, I) of shape (n, dim) (NCFM/NCFM.py L41, without the sampling net)."""
    return torch.randn((n, dim), generator=generator).to(device)


class SamplingNet(nn.Module):
    """psi (NCFM/SampleNet.py): ``t_batchsize // 16`` noise rows -> 3 x (Linear, BatchNorm1d, act) -> tiled."""

    def __init__(self, dim: int, t_batchsize: int = 64, t_var: float = 1.0):
        super().__init__()
        self.dim, self.t_batchsize, self.t_var = dim, t_batchsize, t_var
        self.distinct = t_batchsize // 16
        acts = [nn.LeakyReLU(0.2), nn.LeakyReLU(0.2), nn.Tanh()]
        self.layers = nn.Sequential(*[m for act in acts for m in (nn.Linear(dim, dim), nn.BatchNorm1d(dim), act)])

    @classmethod
    def create(cls, dim: int, t_batchsize: int, t_var: float, generator: torch.Generator,
               device: torch.device) -> "SamplingNet":
        with torch.device("meta"):
            net = cls(dim, t_batchsize, t_var)
        net = net.to_empty(device="cpu")
        init_parameters(net, generator)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):  # PyTorch's default: weight 1, bias 0, fresh running statistics
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
        return net.to(device)

    def noise(self, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return (torch.randn((self.distinct, self.dim), generator=generator) * self.t_var ** 0.5).to(device)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.layers(noise).repeat(self.t_batchsize // self.distinct, 1)


# ------------------------------------------------------------------------------ multi-formation
def decode(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """Each image as factor^dims upsampled grid cells (``decode_zoom``), cell-major: [cell0 of all; cell1 ...]."""
    if factor <= 1:
        return pixels
    spatial = pixels.shape[2:]
    dims = len(spatial)
    size = spatial[-1]
    remained = size % factor
    if remained:  # pad the far side of every axis to a multiple of the factor with 0.5 (grey)
        pixels = F.pad(pixels, (0, factor - remained) * dims, value=0.5)
    cell = math.ceil(size / factor)
    cells = []
    for corner in torch.cartesian_prod(*[torch.arange(factor)] * dims).reshape(-1, dims).tolist():
        index = (slice(None), slice(None)) + tuple(slice(i * cell, (i + 1) * cell) for i in corner)
        cells.append(pixels[index])
    mode = "bilinear" if dims == 2 else "trilinear"
    return F.interpolate(torch.cat(cells), size=tuple(spatial), mode=mode, align_corners=False)


def mix_init(real_pixels: torch.Tensor, ipc: int, factor: int) -> torch.Tensor:
    """ipc stored images from ipc * factor^dims real ones, each resized (nearest) into one grid cell
    (Condenser.load_condensed_data 'mix', L71-102: image k*ipc + n fills cell k of stored image n)."""
    spatial = real_pixels.shape[2:]
    dims, size = len(spatial), spatial[-1]
    out = real_pixels.new_empty((ipc, real_pixels.shape[1]) + tuple(spatial))
    s, remained = size // factor, size % factor
    spans = [(sum(s + (j < remained) for j in range(i)), s + (i < remained)) for i in range(factor)]
    for k, corner in enumerate(torch.cartesian_prod(*[torch.arange(factor)] * dims).reshape(-1, dims).tolist()):
        where = [spans[i] for i in corner]
        part = F.interpolate(real_pixels[k * ipc:(k + 1) * ipc], size=tuple(n for _, n in where))
        out[(slice(None), slice(None)) + tuple(slice(a, a + n) for a, n in where)] = part
    return out


def decode_classes(pixels: torch.Tensor, n_classes: int, factor: int) -> list[torch.Tensor]:
    """The decoded images of every class (class-major storage in, one tensor per class out)."""
    return [decode(p, factor) for p in pixels.chunk(n_classes)]


# ------------------------------------------------------------------------------------- pieces
class Normaliser:
    """Pixels in [0,1] <-> the dataset's normalised tensors (per-channel mean and std)."""

    def __init__(self, mean, std, dims: int, device: torch.device):
        shape = (1, -1) + (1,) * dims
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(shape)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def interpolate(init: torch.Tensor, final: torch.Tensor, l: float | torch.Tensor) -> torch.Tensor:
    """The feature net's flat parameters: l * init + (1 - l) * final (utils/utils.py L450-456)."""
    return l * init + (1 - l) * final


def load_flat(net: nn.Module, flat: torch.Tensor) -> nn.Module:
    torch.nn.utils.vector_to_parameters(flat.to(next(net.parameters()).device), net.parameters())
    return net


def real_features(net: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """Embeddings of a real batch without a graph, in micro-batches within the memory budget (as DM)."""
    with torch.no_grad():
        return in_chunks(net.embed, real, micro_batch(net, real, "embed", net.embed))


def image_optimizer(images: torch.Tensor, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """utils/utils.py L291-308: AdamW (lr, weight decay), Adam (lr) or SGD (lr, momentum)."""
    kind = hp["optimizer_img"]
    if kind == "adamw":
        return torch.optim.AdamW([images], lr=hp["lr_img"], weight_decay=hp["weight_decay_img"])
    if kind == "adam":
        return torch.optim.Adam([images], lr=hp["lr_img"])
    return torch.optim.SGD([images], lr=hp["lr_img"], momentum=hp["momentum_img"])


def match_step(pixels: torch.Tensor, c: int, n_classes: int, real: torch.Tensor, net: nn.Module,
               t: torch.Tensor | None, hp: dict[str, Any], normalise: Normaliser, opt: torch.optim.Optimizer,
               augment: DSA | None = None, generator: torch.Generator | None = None,
               psi: SamplingNet | None = None, psi_noise: torch.Tensor | None = None,
               opt_psi: torch.optim.Optimizer | None = None) -> torch.Tensor:
    """One class's match step (compute_loss.py L22-51): the CF loss of the real batch (normalised) and the
    class's decoded images, one image step down and, with psi, one psi step up from the same forward pass.
    ``t``: the frequencies (None: psi makes them from ``psi_noise``). Returns the loss (detached)."""
    syn = normalise(decode(pixels.chunk(n_classes)[c], hp["factor"]))
    if augment is not None:
        real, syn = augment.pair(real, syn, generator)
    feat_real = real_features(net, real)
    if psi is not None:
        t = psi(psi_noise)
    loss = cf_match_loss(feat_real, net.embed(syn), t, hp)
    opt.zero_grad(set_to_none=True)
    if psi is None:
        loss.backward()
        opt.step()
        return loss.detach()
    params = list(psi.parameters())
    grads = torch.autograd.grad(loss, [pixels] + params)
    pixels.grad = grads[0]
    opt.step()  # minimise over the images
    opt.zero_grad(set_to_none=True)
    opt_psi.zero_grad(set_to_none=True)
    for p, g in zip(params, grads[1:]):
        p.grad = -g  # maximise over psi: backward(-loss) on the same forward
    opt_psi.step()
    opt_psi.zero_grad(set_to_none=True)
    return loss.detach()


def calib_step(pixels: torch.Tensor, c: int, n_classes: int, final: nn.Module, hp: dict[str, Any],
               normalise: Normaliser, opt: torch.optim.Optimizer, augment: DSA | None,
               generator: torch.Generator) -> torch.Tensor:
    """calib_weight * CE(final(aug(decoded S_c)), c) and one image step (compute_loss.py L54-89)."""
    syn = normalise(decode(pixels.chunk(n_classes)[c], hp["factor"]))
    if augment is not None:
        syn = augment(syn, generator, siamese=True)  # DiffAug batch=True: one draw for the batch
    labels = torch.full((len(syn),), c, dtype=torch.long, device=syn.device)
    loss = hp["calib_weight"] * cross_entropy(final(syn), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


# ---------------------------------------------------------------------------------- method
def _premodels(hp: dict[str, Any], budget: Budget) -> int:
    return min(hp["num_premodel"], budget.experts)


def _premodel_epochs(hp: dict[str, Any], budget: Budget) -> int:
    return min(hp["premodel_epochs"], budget.expert_epochs)


@register_method("ncfm")
class NCFM(Method):
    summary = ("characteristic-function matching of pretrained-interpolated features, multi-formation x4 "
               "(ipc stored, 4*ipc decoded), sampling net off as shipped")
    defaults: dict[str, Any] = dict(
        iterations=20000, optimizer_img="adamw", lr_img=1e-3, weight_decay_img=5e-4, momentum_img=0.5,
        batch_real=1024, factor=2, init="mix", num_freqs=4096, alpha=0.5, beta=0.5, loss_scale=300.0,
        iter_calib=1, calib_weight=1.0, sampling_net=False, lr_sampling_net=1e-3, momentum_sampling_net=0.5,
        t_batchsize=64, t_var=1.0, plateau_factor=0.5, plateau_patience=500,
        num_premodel=20, premodel_epochs=60, premodel_lr=0.01, premodel_momentum=0.9, premodel_weight_decay=5e-4,
        premodel_batch=128, premodel_dsa="color_crop", dsa_strategy="color_crop_cutout", model="convnet")
    # t_batchsize >= 32: psi's BatchNorm1d needs at least 2 distinct rows (t_batchsize // 16) in train mode
    limits = dict(
        iterations=NON_NEGATIVE, lr_img=POSITIVE, weight_decay_img=NON_NEGATIVE, momentum_img=MOMENTUM,
        batch_real=AT_LEAST_1, factor=Limit(1, 8), num_freqs=AT_LEAST_1, alpha=FRACTION, beta=FRACTION,
        loss_scale=POSITIVE, iter_calib=NON_NEGATIVE, calib_weight=NON_NEGATIVE, lr_sampling_net=POSITIVE,
        momentum_sampling_net=MOMENTUM, t_batchsize=Limit(32, LARGEST), t_var=POSITIVE,
        plateau_factor=Limit(0, 1, low_open=True, high_open=True), plateau_patience=NON_NEGATIVE,
        num_premodel=AT_LEAST_1, premodel_epochs=AT_LEAST_1, premodel_lr=POSITIVE, premodel_momentum=MOMENTUM,
        premodel_weight_decay=NON_NEGATIVE, premodel_batch=AT_LEAST_1)
    budgets = {
        "quick": dict(iterations=official_share, batch_real=128, num_premodel=_premodels,
                      premodel_epochs=_premodel_epochs),
        "medium": dict(iterations=official_share, num_premodel=_premodels, premodel_epochs=_premodel_epochs),
        "smoke": dict(iterations=10, batch_real=16, num_freqs=512, num_premodel=2,
                      premodel_epochs=_premodel_epochs),
    }

    def presets(self, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        """The CIFAR-10 rows (config/ipc{1,10,50}/cifar10.yaml) are one setting at every ipc (spec 2.4):
        nothing changes with ipc. (CIFAR-100 ipc 10's SGD is a CIFAR-100 choice, not transferred.)"""
        return {}

    def check(self, hp: dict[str, Any], spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        if hp["optimizer_img"] not in OPTIMIZERS:
            raise ConfigError(f"ncfm: optimizer_img {hp['optimizer_img']!r} is not one of {', '.join(OPTIMIZERS)}")
        if hp["init"] not in INITS:
            raise ConfigError(f"ncfm: init {hp['init']!r} is not one of {', '.join(INITS)}")
        if hp["alpha"] + hp["beta"] <= 0:
            raise ConfigError("ncfm: alpha + beta must be > 0 (both 0 makes the CF loss identically 0)")
        if hp["t_batchsize"] % 16:
            raise ConfigError(f"ncfm: t_batchsize {hp['t_batchsize']} must be a multiple of 16 (the sampling net "
                              "tiles t_batchsize // 16 distinct frequencies)")
        if hp["factor"] > spec.size:
            raise ConfigError(f"ncfm: factor {hp['factor']} cuts {spec.size} px images into cells below one pixel")

    def recipe(self, hp: dict[str, Any]) -> ExpertRecipe:
        """The pretrained feature nets: experts with NCFM's pretraining optimiser (spec 2.4, deviations above)."""
        return ExpertRecipe(model=hp["model"], lr=hp["premodel_lr"], momentum=hp["premodel_momentum"],
                            weight_decay=hp["premodel_weight_decay"], batch=hp["premodel_batch"],
                            dsa_strategy=hp["premodel_dsa"], n_experts=hp["num_premodel"],
                            epochs=hp["premodel_epochs"])

    def expert_recipes(self, hp: dict[str, Any]) -> list[ExpertRecipe]:
        return [self.recipe(hp)]

    def images_per_class(self, task: Task) -> int:
        """The decoded images per class: factor^dims of each of the ipc stored ones."""
        return task.ipc * task.hp["factor"] ** task.spec.dims

    # -------------------------------------------------------------------------------- set-up
    def initial_pixels(self, task: Task, normalise: Normaliser) -> torch.Tensor:
        hp, g, ipc = task.hp, task.generator, task.ipc
        if hp["init"] == "noise":  # Condenser.__init__: clamp(N(0,1)/4 + 0.5, 0, 1)
            x = torch.randn((task.n_classes * ipc,) + task.spec.shape, generator=g)
            return (x / 4 + 0.5).clamp(0, 1).to(task.device)
        if hp["init"] == "real":
            return normalise.pixels(task.initial_images("real")).clamp(0, 1)
        need = ipc * hp["factor"] ** task.spec.dims
        out = []
        for c in range(task.n_classes):
            rounds, got = [], 0
            while got < need:  # a class smaller than ipc * factor^dims repeats images
                rounds.append(task.data.sample_class(c, need - got, g))
                got += len(rounds[-1])
            real = normalise.pixels(torch.cat(rounds).to(task.device)).clamp(0, 1)
            out.append(mix_init(real, ipc, hp["factor"]))
        return torch.cat(out)

    def feature_pool(self, task: Task) -> Trajectories:
        if task.experts is None:
            raise ConfigError("ncfm needs its pretrained feature nets from the expert cache; run it through the "
                              "runner (or give the Task an ExpertProvider)")
        return task.experts(self.recipe(task.hp))

    # -------------------------------------------------------------------------------- distill
    def distill(self, task: Task) -> SyntheticSet:
        hp, g, k = task.hp, task.generator, task.n_classes
        normalise = Normaliser(task.data.mean, task.data.std, task.spec.dims, task.device)
        pool = self.feature_pool(task)
        fixed = torch.Generator().manual_seed(0)  # every weight is overwritten from the pool: no draw from g
        net = task.network(hp["model"], generator=fixed).train().requires_grad_(False)
        final = task.network(hp["model"], generator=fixed).train().requires_grad_(False)
        pixels = self.initial_pixels(task, normalise).detach().clone().requires_grad_(True)
        labels = torch.arange(k, device=task.device).repeat_interleave(self.images_per_class(task))
        opt = image_optimizer(pixels, hp)
        state: dict[str, Any] = {
            "images": pixels, "opt_img": opt,
            "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=hp["plateau_factor"],
                                                                  patience=hp["plateau_patience"])}
        psi = None
        with torch.no_grad():
            dim = net.embed(normalise(pixels[:1])).shape[1]  # the feature size (psi's width; official: 2048)
        if hp["sampling_net"]:
            psi = SamplingNet.create(dim, hp["t_batchsize"], hp["t_var"], g, task.device).train()
            state["psi"] = psi
            state["opt_psi"] = torch.optim.SGD(psi.parameters(), lr=hp["lr_sampling_net"],
                                               momentum=hp["momentum_sampling_net"])
        augment = None if hp["dsa_strategy"].lower() in ("", "none") else DSA(hp["dsa_strategy"], mode="M")
        n_nets = min(hp["num_premodel"], len(pool))

        def current() -> SyntheticSet:
            return self.result(task, pixels, labels, normalise)

        def step(it: int) -> dict[str, Any]:
            m = int(torch.randint(n_nets, (1,), generator=g))
            l = float(torch.rand((), generator=g))
            load_flat(net, interpolate(pool.snapshot(m, 0), pool.final(m), l))
            load_flat(final, pool.final(m))
            with torch.no_grad():
                pixels.clamp_(0, 1)
            match, calib = [], []
            try:
                for c in range(k):
                    real = task.real_batch(c, hp["batch_real"])
                    t = None if psi is not None else gaussian_frequencies(hp["num_freqs"], dim, g, task.device)
                    noise = psi.noise(g, task.device) if psi is not None else None
                    match.append(match_step(pixels, c, k, real, net, t, hp, normalise, opt, augment, g, psi, noise,
                                            state.get("opt_psi")))
                for _ in range(hp["iter_calib"]):
                    for c in range(k):
                        calib.append(calib_step(pixels, c, k, final, hp, normalise, opt, augment, g))
            except RuntimeError as exc:  # Adam's step size lr / (1 - beta1^n) past float32: the step diverged
                if "overflow" not in str(exc):
                    raise
                return {"loss": float("nan")}  # the loop's guard stops the run and keeps the last good set
            match_mean = torch.stack(match).mean()
            calib_sum = torch.stack(calib).sum() / k if calib else torch.zeros(())
            loss = match_mean + calib_sum  # Condenser L262-266: (match + calib totals) / classes
            state["plateau"].step(float(loss))
            return {"loss": loss, "match_loss": match_mean, "calib_loss": calib_sum,
                    "lr_img": opt.param_groups[0]["lr"], "premodel": m, "l": round(l, 4)}

        distill_loop(task, hp["iterations"], state, step, current, name=self.name)
        return current()

    def result(self, task: Task, pixels: torch.Tensor, labels: torch.Tensor, normalise: Normaliser) -> SyntheticSet:
        """The decoded set, normalised, class-major; the stored pixels as the official code saves them
        (unclamped after the last step: the clamp runs at the start of an iteration, Condenser L223)."""
        with torch.no_grad():
            decoded = torch.cat([normalise(d) for d in decode_classes(pixels.detach(), task.n_classes,
                                                                      task.hp["factor"])])
        meta = {"factor": task.hp["factor"], "stored_per_class": task.ipc,
                "decoded_per_class": self.images_per_class(task), "sampling_net": task.hp["sampling_net"]}
        return SyntheticSet(decoded, labels, meta=meta)

