"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021) for 2D and 3D tensors.

Faithful to the official ``DiffAugment``: ``aug_mode='S'`` draws one op group per call (for the
whole batch) and the op's parameters per sample; in siamese mode one parameter draw (sample 0's)
is shared by the whole batch, and :meth:`DSA.pair` applies the *same* draw to a real and a
synthetic batch. Every op is differentiable with respect to the images. Randomness comes only
from an explicit CPU ``torch.Generator``, so a seed fixes the augmentation on any device.

3D volumes (N, C, D, H, W): crop, cutout and scale act on all three axes; flip mirrors the last
(W) axis, as in 2D; rotation turns the H-W plane (axial slices) by the same angle range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mddbench.errors import ConfigError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DSAParams:
    """The official ``ParamDiffAug`` defaults."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


@dataclass
class Draw:
    """One sampled transform: the op group and its parameters, one row per sample (or one, shared)."""

    op: str
    params: dict[str, torch.Tensor] = field(default_factory=dict)


def _uniform(n: int, g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=g)


class DSA:
    OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")

    def __init__(self, strategy: str = DEFAULT_STRATEGY, params: DSAParams = DSAParams(), mode: str = "S"):
        self.strategy = strategy
        self.ops = [] if strategy in ("", "none") else strategy.split("_")
        unknown = [o for o in self.ops if o not in self.OPS]
        if unknown:
            raise ConfigError(f"unknown DSA op(s) {unknown}; known: {', '.join(self.OPS)}")
        if mode not in ("S", "M"):
            raise ConfigError("DSA mode is 'S' (one op group per call) or 'M' (all groups)")
        self.params = params
        self.mode = mode

    def __repr__(self) -> str:
        return f"DSA({self.strategy!r}, mode={self.mode!r})"

    # ---------------------------------------------------------------------------------- public
    def __call__(self, x: torch.Tensor, generator: torch.Generator, siamese: bool = False) -> torch.Tensor:
        for draw in self.sample(x, generator, siamese):
            x = self.apply(x, draw)
        return x

    def pair(self, x_real: torch.Tensor, x_syn: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Siamese augmentation: both batches get one identical transform."""
        for draw in self.sample(x_real, generator, siamese=True):
            x_real, x_syn = self.apply(x_real, draw), self.apply(x_syn, draw)
        return x_real, x_syn

    def sample(self, x: torch.Tensor, generator: torch.Generator, siamese: bool = False) -> list[Draw]:
        if not self.ops:
            return []
        if self.mode == "S":
            ops = [self.ops[int(torch.randint(len(self.ops), (1,), generator=generator))]]
        else:
            ops = self.ops
        n = 1 if siamese else x.shape[0]
        dims = x.ndim - 2
        size = x.shape[2:]
        return [Draw(op, getattr(self, f"_sample_{op}")(n, dims, size, generator)) for op in ops]

    def apply(self, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        params = {k: v.to(x.device) for k, v in draw.params.items()}
        return getattr(self, f"_apply_{draw.op}")(x, **params)

    # ---------------------------------------------------------------------------- op sampling
    def _sample_color(self, n, dims, size, g):
        return {"b": _uniform(n, g), "s": _uniform(n, g), "c": _uniform(n, g)}

    def _sample_crop(self, n, dims, size, g):
        shift = [int(s * self.params.ratio_crop_pad + 0.5) for s in size]
        return {"shift": torch.stack([torch.randint(-m, m + 1, (n,), generator=g) for m in shift], 1)}

    def _sample_cutout(self, n, dims, size, g):
        cut = [int(s * self.params.ratio_cutout + 0.5) for s in size]
        return {"offset": torch.stack([torch.randint(0, s + (1 - c % 2), (n,), generator=g)
                                       for s, c in zip(size, cut)], 1)}

    def _sample_flip(self, n, dims, size, g):
        return {"flip": _uniform(n, g) < self.params.prob_flip}

    def _sample_scale(self, n, dims, size, g):
        r = self.params.ratio_scale
        return {"factor": _uniform(n, g, dims) * (r - 1.0 / r) + 1.0 / r}

    def _sample_rotate(self, n, dims, size, g):
        return {"angle": (_uniform(n, g) - 0.5) * 2 * self.params.ratio_rotate / 180 * math.pi}

    # ---------------------------------------------------------------------------- op applying
    @staticmethod
    def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v.reshape(v.shape[0], *([1] * (x.ndim - 1))).to(x.dtype)

    def _apply_color(self, x, b, s, c):
        p = self.params
        x = x + (self._bcast(b, x) - 0.5) * p.brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (self._bcast(s, x) * p.saturation) + mean
        mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        return (x - mean) * (self._bcast(c, x) + p.contrast) + mean

    def _apply_crop(self, x, shift):
        """Translate by an integer shift per axis with a one-pixel zero border (DiffAugment's crop).

        Pad by one, then gather each axis in turn at ``clamp(i + shift + 1)``: the official
        index grid is separable, so per-axis gathers reproduce it exactly.
        """
        dims = x.ndim - 2
        x = F.pad(x, (1, 1) * dims)
        for a in range(dims):
            size = x.shape[2 + a] - 2
            idx = (torch.arange(size, device=x.device)[None, :] + shift[:, a:a + 1] + 1).clamp(0, size + 1)
            view = [idx.shape[0]] + [1] * (x.ndim - 1)
            view[2 + a] = size
            target = list(x.shape)
            target[2 + a] = size
            x = torch.gather(x, 2 + a, idx.view(view).expand(target))
        return x

    def _apply_cutout(self, x, offset):
        dims = x.ndim - 2
        keep = None
        for a in range(dims):
            size = x.shape[2 + a]
            cut = int(size * self.params.ratio_cutout + 0.5)
            lo = (offset[:, a] - cut // 2).clamp(min=0)[:, None]
            hi = (offset[:, a] - cut // 2 + cut).clamp(max=size)[:, None]
            pos = torch.arange(size, device=x.device)[None, :]
            inside = (pos >= lo) & (pos < hi)
            shape = [inside.shape[0]] + [1] * dims
            shape[1 + a] = size
            inside = inside.view(shape)
            keep = inside if keep is None else keep & inside
        mask = (~keep).to(x.dtype).unsqueeze(1)
        return x * mask

    def _apply_flip(self, x, flip):
        return torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)

    def _affine(self, x, theta):
        if theta.shape[0] == 1 and x.shape[0] > 1:
            theta = theta.expand(x.shape[0], *theta.shape[1:])
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def _apply_scale(self, x, factor):
        dims = x.ndim - 2
        theta = torch.zeros(factor.shape[0], dims, dims + 1, device=x.device)
        theta[:, range(dims), range(dims)] = factor.to(theta.dtype)
        return self._affine(x, theta)

    def _apply_rotate(self, x, angle):
        dims = x.ndim - 2
        theta = torch.zeros(angle.shape[0], dims, dims + 1, device=x.device)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, sin, -sin, cos
        if dims == 3:
            theta[:, 2, 2] = 1.0
        return self._affine(x, theta)


NO_AUGMENT = DSA("none")
