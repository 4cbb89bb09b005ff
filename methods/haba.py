"""HaBa: Dataset Distillation via Factorization (Liu et al., NeurIPS'22), docs/methods.md 4.7.

The set is factorised into *bases* [classes x bases_per_class, c_base, *spatial] and ``n_style``
*hallucinators* shared across classes. A hallucinator is a conv3 without padding (c_base -> C),
a per-pixel affine (scale 1, shift 0 at init) of the encoder's output size, and a transposed conv3
(C -> C) back to the input size: written for any size, channel count and for 3D volumes (Conv3d),
where the official code hard-codes 32 px. A training image is hallucinator_k(base) with the base's
label.

Per iteration: (1) MTT's unroll (:func:`mddbench.nn.unroll.match`) on minibatches rendered with one
random hallucinator per minibatch (:class:`HabaSource`); (2) the adversarial "club" term on the
generator side, lambda_club * mean((cos(E(x0), E(x1)) + 1) / 2) for two renderings of the same bases
by two different hallucinators, added to the matching loss; step the bases (SGD lr_img, momentum
0.95), the hallucinators (lr_style, 0.95) and syn_lr (lr_lr, 0.9), and clip syn_lr at >= 0.001;
(3) the extractor E (the ConvNet: conv blocks, embedding, linear classifier) takes its own step
(SGD 0.001, momentum 0.9) on a fresh pair: CE on both renderings + lambda_likeli * mean((1 - cos) / 2)
+ lambda_contrast * SupCon (temperature 0.07, two views, class-label positives).

Storage budget. By default ``ipc`` = bases per class, as the official scripts count it ("IPC 1" =
1 base per class + 5 hallucinators, whose parameters are extra storage). With
``count_hallucinators=true`` the bases per class are instead chosen so that the bases plus all
hallucinator parameters fit in ``ipc`` images per class (:func:`bases_per_class`); a setting where
the hallucinators alone exceed the budget is refused. The choice is in ``summary`` and in the
saved set's metadata (``bases_per_class``, ``storage_values``).

The saved set stores the bases as ``images`` and the hallucinators' tensors as ``extra``; the
``haba`` renderer rebuilds the hallucinators from those tensors by name (no code in the file) and
renders each base with a uniformly random hallucinator per sample, as the official evaluation does.

Deviations from the official code: the extractor's input minibatch for the club term and the
extractor step is drawn independently of the unroll's minibatch schedule (the official code pops
from the same shuffled chunks); renderings for the extractor step carry no graph to the bases
(the official code builds one and discards it); the extractor is the suite's ConvNet (its depth
follows the resolution), the official one is a 3-block ConvNet for 32 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from mddbench.api.budgets import Budget
from mddbench.api.method import Task
from mddbench.api.synset import SyntheticSet, register_renderer
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.limits import AT_LEAST_1, MOMENTUM, NON_NEGATIVE, POSITIVE
from mddbench.memory import backward_through_features, micro_batch
from mddbench.nn.losses import cross_entropy
from mddbench.nn.networks import init_parameters
from mddbench.registry import register_method
from mddbench.trajectory.experts import Trajectories
from mddbench.trajectory.matching import MTT_IPC1, MTT_IPC10, Step, TrajectoryMatching

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_DECONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
KERNEL = 3


# ---------------------------------------------------------------------------------- hallucinators
class Hallucinator(nn.Module):
    """conv3 (no padding) -> per-pixel scale and shift -> transposed conv3 back to the input size."""

    def __init__(self, c_base: int, channels: int, spatial: tuple[int, ...]):
        super().__init__()
        dims = len(spatial)
        inner = tuple(s - KERNEL + 1 for s in spatial)
        self.enc = _CONV[dims](c_base, channels, KERNEL)
        self.scale = nn.Parameter(torch.ones(1, channels, *inner))
        self.shift = nn.Parameter(torch.zeros(1, channels, *inner))
        self.dec = _DECONV[dims](channels, channels, KERNEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x) * self.scale + self.shift)


class Hallucinators(nn.Module):
    """``n_style`` hallucinators; also the ``haba`` renderer (a random hallucinator per sample)."""

    def __init__(self, n_style: int, c_base: int, channels: int, spatial: tuple[int, ...]):
        super().__init__()
        self.styles = nn.ModuleList(Hallucinator(c_base, channels, spatial) for _ in range(n_style))

    @classmethod
    def create(cls, n_style: int, c_base: int, channels: int, spatial: tuple[int, ...],
               generator: torch.Generator, device: torch.device | str = "cpu") -> "Hallucinators":
        """PyTorch's default conv initialisation drawn from ``generator``, scale 1 and shift 0."""
        with torch.device("meta"):
            module = cls(n_style, c_base, channels, spatial)
        module = module.to_empty(device="cpu")
        init_parameters(module, generator)
        with torch.no_grad():
            for h in module.styles:
                h.scale.fill_(1.0)
                h.shift.zero_()
        return module.to(device)

    def __len__(self) -> int:
        return len(self.styles)

    def forward(self, x: torch.Tensor, style: int) -> torch.Tensor:
        return self.styles[style](x)

    def render(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each base through a uniformly random hallucinator (the evaluation's rendering)."""
        pick = torch.randint(len(self), (len(images),), generator=generator).to(images.device)
        out = None
        for s in pick.unique().tolist():
            rows = (pick == s).nonzero().flatten()
            y = self(images[rows], s)
            out = y.new_zeros((len(images),) + y.shape[1:]) if out is None else out
            out[rows] = y
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.state_dict().items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Hallucinators":
        """Rebuild from :meth:`tensors`: every shape follows from the stored weights."""
        n_style = len({k.split(".")[1] for k in tensors if k.startswith("styles.")})
        enc, scale = tensors["styles.0.enc.weight"], tensors["styles.0.scale"]
        spatial = tuple(s + KERNEL - 1 for s in scale.shape[2:])
        with torch.device("meta"):
            module = cls(n_style, enc.shape[1], enc.shape[0], spatial)
        module = module.to_empty(device="cpu")
        module.load_state_dict(tensors)
        return module


@register_renderer("haba")
def _renderer(extra: dict[str, torch.Tensor], meta: dict) -> Hallucinators:
    return Hallucinators.from_tensors(extra).requires_grad_(False)


@dataclass
class HabaSource:
    """The unroll's minibatches: bases rendered by one random hallucinator per minibatch."""

    bases: torch.Tensor
    labels: torch.Tensor
    hallucinators: Hallucinators

    def __len__(self) -> int:
        return len(self.bases)

    def batch(self, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        style = int(torch.randint(len(self.hallucinators), (1,), generator=generator))
        idx = idx.to(self.bases.device)
        return self.hallucinators(self.bases[idx], style), self.labels[idx]


# ---------------------------------------------------------------------------------- storage
def hallucinator_values(n_style: int, c_base: int, channels: int, spatial: tuple[int, ...]) -> int:
    """Stored numbers of ``n_style`` hallucinators (weights, biases, scale and shift)."""
    k = KERNEL ** len(spatial)
    inner = math.prod(s - KERNEL + 1 for s in spatial)
    one = c_base * channels * k + channels + 2 * channels * inner + channels * channels * k + channels
    return n_style * one


def spatial_of(spec: DatasetSpec) -> tuple[int, ...]:
    return (spec.size,) * spec.dims


def c_base_of(hp: dict, spec: DatasetSpec) -> int:
    return 1 if hp["single_channel"] else spec.channels


def bases_per_class(hp: dict, spec: DatasetSpec, ipc: int) -> int:
    """``ipc`` (official), or the most bases that fit in ipc images per class with the hallucinators."""
    if not hp["count_hallucinators"]:
        return ipc
    spatial = spatial_of(spec)
    c_base = c_base_of(hp, spec)
    budget = ipc * spec.n_classes * spec.channels * math.prod(spatial)
    left = budget - hallucinator_values(hp["n_style"], c_base, spec.channels, spatial)
    return left // (spec.n_classes * c_base * math.prod(spatial))


# ---------------------------------------------------------------------------------- losses
def pair_cosine(embed: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the two halves of a batch of paired embeddings."""
    e0, e1 = embed.chunk(2)
    return F.cosine_similarity(e0, e1)


def supcon(embed: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
           base_temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over two views: ``embed`` = [view0; view1]."""
    f = F.normalize(embed, dim=1)
    y = labels.repeat(2)
    logits = f @ f.T / temperature
    logits = logits - logits.max(1, keepdim=True).values.detach()
    self_pair = torch.eye(len(f), dtype=torch.bool, device=f.device)
    positive = (y[:, None] == y[None, :]) & ~self_pair
    log_prob = logits - logits.masked_fill(self_pair, -math.inf).exp().sum(1, keepdim=True).log()
    mean_positive = (log_prob * positive).sum(1) / positive.sum(1)
    return -(temperature / base_temperature) * mean_positive.mean()


# ---------------------------------------------------------------------------------- method
HABA_IPC50 = dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_lr=1e-5, lr_teacher=0.01)


@register_method("haba")
class HaBa(TrajectoryMatching):
    summary = ("factorisation: bases x 5 shared hallucinators, adversarial diversity; ipc = bases per class "
               "(hallucinators extra, official) unless count_hallucinators=true")
    defaults: dict[str, Any] = dict(
        TrajectoryMatching.defaults, iterations=15000, syn_steps=64, lr_img=100.0, momentum_img=0.95,
        n_style=5, single_channel=False, count_hallucinators=False, lr_style=100.0, momentum_style=0.95,
        momentum_lr=0.9, min_syn_lr=0.001, lambda_club=0.1, lambda_cls=1.0, lambda_likeli=0.1,
        lambda_contrast=0.1, temperature=0.07, lr_extractor=0.001, momentum_extractor=0.9)
    limits = dict(n_style=AT_LEAST_1, lr_style=POSITIVE, momentum_style=MOMENTUM, momentum_lr=MOMENTUM,
                  min_syn_lr=POSITIVE, lambda_club=NON_NEGATIVE, lambda_cls=NON_NEGATIVE, lambda_likeli=NON_NEGATIVE,
                  lambda_contrast=NON_NEGATIVE, temperature=POSITIVE, lr_extractor=POSITIVE,
                  momentum_extractor=MOMENTUM)
    budgets = {
        "quick": dict(TrajectoryMatching.budgets["quick"], syn_steps=lambda hp, b: min(hp["syn_steps"], 10)),
        "smoke": dict(TrajectoryMatching.budgets["smoke"]),
    }

    def presets(self, spec: DatasetSpec, ipc: int) -> dict[str, Any]:
        """The CIFAR-10 scripts' rows (lr_img stays 100 at every ipc)."""
        row = MTT_IPC1 if ipc < 10 else MTT_IPC10 if ipc < 50 else HABA_IPC50
        return {k: v for k, v in row.items() if k != "lr_img"}

    def check(self, hp: dict, spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        if hp["n_style"] < 2:
            raise ConfigError("haba needs n_style >= 2 (the club and extractor terms compare two hallucinators)")
        if spec.size < KERNEL:
            raise ConfigError(f"haba: {spec.size} px is smaller than the hallucinator's {KERNEL}-kernel")
        if bases_per_class(hp, spec, ipc) < 1:
            values = hallucinator_values(hp["n_style"], c_base_of(hp, spec), spec.channels, spatial_of(spec))
            raise ConfigError(
                f"haba: {hp['n_style']} hallucinators alone ({values} values) exceed ipc {ipc} images per class of "
                f"{spec.name}; raise ipc, lower n_style, or set count_hallucinators=false (the official count: "
                "ipc = bases per class)")

    # -------------------------------------------------------------------------------- set-up hooks
    def n_bases(self, task: Task) -> int:
        return bases_per_class(task.hp, task.spec, task.ipc)

    def images_per_class(self, task: Task) -> int:
        return self.n_bases(task)  # the stored set is the bases; the hallucinators render the rest

    def initial_images(self, task: Task, experts: Trajectories) -> torch.Tensor:
        n = self.n_bases(task)
        if task.hp["init"] == "real":  # with more bases than images in a class, images repeat
            per_class = []
            for c in range(task.n_classes):
                rounds, got = [], 0
                while got < n:
                    rounds.append(task.data.sample_class(c, n - got, task.generator))
                    got += len(rounds[-1])
                per_class.append(torch.cat(rounds))
            x = torch.cat(per_class).to(task.device)
        else:
            x = task.initial_images(task.hp["init"], ipc=n)
        return x.mean(1, keepdim=True) if task.hp["single_channel"] else x

    def initial_labels(self, task: Task, experts: Trajectories, images: torch.Tensor) -> torch.Tensor:
        return task.hard_labels(self.n_bases(task))

    def extra_state(self, task: Task, state: dict) -> dict[str, Any]:
        hp, s = task.hp, task.spec
        halluc = Hallucinators.create(hp["n_style"], state["images"].shape[1], s.channels, spatial_of(s),
                                      task.generator, task.device)
        extractor = task.network("convnet", generator=task.generator)
        return {
            "hallucinators": halluc, "extractor": extractor,
            "opt_lr": torch.optim.SGD([state["syn_lr"]], lr=hp["lr_lr"], momentum=hp["momentum_lr"]),
            "opt_style": torch.optim.SGD(halluc.parameters(), lr=hp["lr_style"], momentum=hp["momentum_style"]),
            "extractor_opt": torch.optim.SGD(extractor.parameters(), lr=hp["lr_extractor"],
                                             momentum=hp["momentum_extractor"]),
        }

    # -------------------------------------------------------------------------------- iteration
    def rendered_pair(self, task: Task, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A minibatch of bases rendered by two different hallucinators, [x0; x1] with DSA, and its labels."""
        g, halluc = task.generator, state["hallucinators"]
        n = len(state["images"])
        idx = torch.randperm(n, generator=g)[:task.hp["batch_syn"] or n].to(task.device)
        s0, s1 = torch.randperm(len(halluc), generator=g)[:2].tolist()
        bases = state["images"][idx]
        x = torch.cat([halluc(bases, s0), halluc(bases, s1)])
        return task.augment(x, g), state["labels"][idx]

    def extractor_step(self, task: Task, state: dict) -> dict[str, float]:
        hp, extractor = task.hp, state["extractor"]
        with torch.no_grad():
            x, y = self.rendered_pair(task, state)
        parts: dict[str, torch.Tensor] = {}

        def loss_of(embed: torch.Tensor) -> torch.Tensor:
            parts["cls"] = cross_entropy(extractor.classifier(embed), y.repeat(2))
            likeli = ((1 - pair_cosine(embed)) / 2).mean()
            contrast = supcon(embed, y, hp["temperature"], hp["temperature"])
            return hp["lambda_cls"] * parts["cls"] + hp["lambda_likeli"] * likeli + hp["lambda_contrast"] * contrast

        state["extractor_opt"].zero_grad(set_to_none=True)
        # the contrastive loss couples the whole minibatch: gradient caching bounds the extractor's graph
        loss = backward_through_features(extractor.embed, x, loss_of, self._micro(task, extractor, x, "haba extractor"))
        state["extractor_opt"].step()
        return {"extractor_loss": float(loss), "extractor_ce": float(parts["cls"].detach())}

    @staticmethod
    def _micro(task: Task, extractor: nn.Module, x: torch.Tensor, purpose: str) -> int:
        return micro_batch(extractor, x, purpose, forward=extractor.embed)

    def source(self, task: Task, state: dict) -> HabaSource:
        return HabaSource(state["images"], state["labels"], state["hallucinators"])

    def extra_loss(self, task: Task, state: dict) -> tuple[torch.Tensor, float, dict[str, Any]]:
        """The club term on a fresh rendered pair (lambda_club inside, so the logged value is the term's)."""
        x, _ = self.rendered_pair(task, state)
        extractor = state["extractor"]

        def club_of(embed: torch.Tensor) -> torch.Tensor:
            return task.hp["lambda_club"] * ((pair_cosine(embed) + 1) / 2).mean()

        # backpropagated here, in chunks (gradient caching), into the bases and hallucinators through x; the
        # extractor's gradients from it are dropped, as before (its optimiser zeroes them before its own step)
        club = backward_through_features(extractor.embed, x, club_of, self._micro(task, extractor, x, "haba club"))
        return club, 1.0, {"club": float(club)}

    def after_step(self, task: Task, state: dict, step: Step) -> dict[str, Any]:
        with torch.no_grad():
            state["syn_lr"].clamp_(min=task.hp["min_syn_lr"])
        return self.extractor_step(task, state)

    def metrics(self, task: Task, state: dict, step: Step) -> dict[str, Any]:
        res = step.result
        return {"loss": step.loss, "param_loss": res.loss, **step.extra, "student_ce": res.ce,
                "syn_lr": float(state["syn_lr"].detach()), "expert": step.expert, "start_epoch": step.start_epoch,
                "target_epoch": step.target_epoch}

    def result(self, task: Task, state: dict) -> SyntheticSet:
        halluc: Hallucinators = state["hallucinators"]
        bases = state["images"]
        storage = bases.numel() + sum(p.numel() for p in halluc.parameters())
        meta = {"bases_per_class": self.n_bases(task), "n_style": len(halluc),
                "storage_values": storage, "count_hallucinators": task.hp["count_hallucinators"]}
        return task.synset(bases, state["labels"], lr=float(state["syn_lr"].detach()), renderer="haba",
                           extra=halluc.tensors(), meta=meta)

