"""Training several evaluation networks at once: packed networks and per-model augmentation.

The ``n`` networks of an evaluation share their architecture, so they can run as one network whose
channels are the ``n`` networks' channels side by side ("packed": model ``i`` owns channel block
``i`` of every layer). A convolution becomes one grouped convolution (``groups x n``), a
GroupNorm one GroupNorm with ``n`` times the groups, a linear layer one batched matrix product;
parameter-free layers (ReLU, pooling, flatten, residual additions) act per channel and need no
change, so the architecture's own ``forward`` runs unmodified on packed tensors. Every packed
parameter is the concatenation of the ``n`` networks' parameters along dimension 0, so
element-wise optimisers (SGD with momentum and weight decay) update each network exactly as they
would on its own, and :func:`unstack_into` hands each network its slice back.

Grouped convolutions rather than ``torch.func.vmap`` over stacked parameters: vmap's convolution
rule builds the same grouped convolution, and it measured slower on the CPU (10-30%, ConvNet at
28 px); grouped convolutions are native oneDNN / cuDNN kernels.

Speed: on a GPU, one small network leaves the device idle and ten packed ones fill it. On the CPU
a training step is compute-bound (convolutions, then full-resolution element-wise passes), so
packing saves only per-op overhead and thread synchronisation: about x1.3-2 with two threads on a
loaded machine, x0.75-1.0 with one thread, where larger packed tensors fall out of cache.

Networks whose layers cannot be packed (BatchNorm's running statistics, LayerNorm, any layer with
parameters or buffers not listed here) raise :class:`NotPackable`, and :func:`stack_networks`
checks a packed forward against the networks' own forwards before training, so an architecture
whose ``forward`` mixes channels (``x.mean(1)``, a channel ``cat``) is refused instead of trained
wrongly; evaluation then falls back to training the networks one by one.
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn

from mddbench.errors import ConfigError
from mddbench.memory import graph_mb
from mddbench.nn.augment import DSA, Draw

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class NotPackable(ConfigError):
    """These networks cannot be trained side by side (evaluation trains them one by one instead)."""


class PackedLinear(nn.Module):
    """``n`` linear layers on packed features ``(..., n * in)`` -> ``(..., n * out)``.

    ``weight`` is ``(n * out, in)`` and ``bias`` ``(n * out,)``: the layers' parameters concatenated.
    """

    def __init__(self, n: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.n, self.in_features, self.out_features = n, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n * out_features, in_features, device="meta"))
        self.bias = nn.Parameter(torch.empty(n * out_features, device="meta")) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.n, self.in_features).transpose(0, 1)  # (n, rows, in)
        w = self.weight.view(self.n, self.out_features, self.in_features).transpose(1, 2)
        if self.bias is None:
            y = torch.bmm(x, w)
        else:
            y = torch.baddbmm(self.bias.view(self.n, 1, self.out_features), x, w)
        return y.transpose(0, 1).reshape(*lead, self.n * self.out_features)


def _packed_layer(m: nn.Module, n: int) -> nn.Module:
    """The empty (meta) packed counterpart of a layer with parameters."""
    with torch.device("meta"):
        if isinstance(m, _CONVS):
            return type(m)(n * m.in_channels, n * m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                           n * m.groups, bias=m.bias is not None, padding_mode=m.padding_mode)
        if isinstance(m, nn.GroupNorm):
            return nn.GroupNorm(n * m.num_groups, n * m.num_channels, m.eps, m.affine)
        if type(m) is nn.Linear:
            return PackedLinear(n, m.in_features, m.out_features, m.bias is not None)
    raise NotPackable(f"{type(m).__name__} layers cannot be packed")


def stack_networks(nets: list[nn.Module], probe: torch.Tensor | None = None) -> nn.Module:
    """One network computing all of ``nets`` (same architecture) on packed inputs ``(B, n * C, ...)``.

    Its output is ``(B, n * classes)``, network ``i`` in block ``i``. With ``probe`` (a batch of
    inputs of one network), the packed forward must match the networks' own, or NotPackable.
    """
    n = len(nets)
    stacked = copy.deepcopy(nets[0])
    for name, module in list(stacked.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise NotPackable("BatchNorm keeps running statistics per network")
        if any(b is not None for b in module._buffers.values()):
            raise NotPackable(f"{type(module).__name__} keeps buffers per network")
        if all(p is None for p in module._parameters.values()):
            continue
        packed = _packed_layer(module, n)
        for pname, _ in module.named_parameters(recurse=False):
            values = [net.get_submodule(name).get_parameter(pname).detach() for net in nets]
            setattr(packed, pname, nn.Parameter(torch.cat(values)))
        if name:
            parent, _, child = name.rpartition(".")
            setattr(stacked.get_submodule(parent), child, packed)
        else:
            stacked = packed
    stacked.train(nets[0].training)
    if probe is not None:
        _check(stacked, nets, probe)
    return stacked


@contextlib.contextmanager
def full_fp32():
    """TF32 off for cuDNN and matmuls while active (a no-op on CPUs).

    On a GPU, TF32 rounds a grouped convolution differently from the separate ones by ~1e-3;
    the structural check below must compare float32 with float32.
    """
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


@torch.no_grad()
def _check(stacked: nn.Module, nets: list[nn.Module], probe: torch.Tensor) -> None:
    with full_fp32():
        _compare(stacked, nets, probe)


def _compare(stacked: nn.Module, nets: list[nn.Module], probe: torch.Tensor) -> None:
    own = torch.stack([net(probe) for net in nets], 1)
    try:
        packed = stacked(torch.cat([probe] * len(nets), 1)).view(own.shape)
    except RuntimeError as exc:  # a shape error: the forward reshapes across channels
        raise NotPackable(f"the packed forward fails ({exc})") from exc
    if not torch.allclose(packed, own, rtol=1e-3, atol=1e-4 * float(own.abs().max().clamp(min=1))):
        raise NotPackable("the packed forward differs from the networks' own (the architecture mixes channels)")


def activation_bytes(net: nn.Module, probe: torch.Tensor) -> float:
    """Bytes autograd keeps per input image for ``net``'s backward pass, measured on ``probe``."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    with torch.enable_grad():
        out = net(probe)
    return graph_mb(out, exclude=params) * 2**20 / len(probe)


@torch.no_grad()
def unstack_into(stacked: nn.Module, nets: list[nn.Module]) -> list[nn.Module]:
    """Copy each network's slice of the packed parameters back into it."""
    for name, p in stacked.named_parameters():
        for net, part in zip(nets, p.chunk(len(nets))):
            net.get_parameter(name).copy_(part)
    return nets


def augment_together(aug: DSA, xs: list[torch.Tensor], draws: list[list[Draw]]) -> list[torch.Tensor]:
    """Apply each batch's own DSA draws, as ``aug.apply`` one by one would.

    Every draw holds one parameter row per image, so batches that drew the same op are
    concatenated and transformed in one call (fewer kernel launches on a GPU).
    """
    xs = list(xs)
    for k in range(len(draws[0])):
        groups: dict[str, list[int]] = {}
        for i, d in enumerate(draws):
            groups.setdefault(d[k].op, []).append(i)
        for op, members in groups.items():
            params = {key: torch.cat([draws[i][k].params[key] for i in members]) for key in draws[members[0]][k].params}
            out = aug.apply(torch.cat([xs[i] for i in members]), Draw(op, params))
            for i, part in zip(members, out.split([len(xs[i]) for i in members])):
                xs[i] = part
    return xs
