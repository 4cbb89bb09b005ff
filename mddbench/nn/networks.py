"""Networks for distillation and evaluation: ConvNet, LeNet, AlexNet, ResNet18, in 2D and 3D.

Every network takes ``(channels, n_classes, size, dims)`` and works for any channel count, 28 px,
112 px and 3D volumes: flatten sizes come from the real feature map (computed on the meta device),
never from a table, which avoids the official code's 28x28 special case that breaks for RGB.
Parameters are initialised from an explicit ``torch.Generator`` (PyTorch's default scheme), so a
seed fixes a network exactly, on any device, without touching the global RNG.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mddbench.errors import ConfigError
from mddbench.memory import has_batchnorm  # noqa: F401  (networks' callers ask here)
from mddbench.registry import NETWORKS, register_network

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_AVGPOOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_BATCHNORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_ADAPTIVE_AVG = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def norm_layer(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "instancenorm":  # the DC/MTT convention: GroupNorm with one group per channel
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return _BATCHNORM[dims](channels)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; choose instancenorm, batchnorm, groupnorm or none")


def depth_for(size: int) -> int:
    """ConvNet depth by resolution, keeping the final map near 4x4: 28/32 -> 3, 64 -> 4, 112/128 -> 5."""
    return max(1, round(math.log2(size / 4)))


def _flat_features(make: Callable[[], nn.Module], channels: int, size: int, dims: int) -> int:
    with torch.device("meta"):
        return make()(torch.zeros(1, channels, *(size,) * dims)).flatten(1).shape[1]


class FeaturesThenClassifier(nn.Module):
    """``features`` (a conv stack) -> flatten (the embedding DM and CAFE use) -> ``classifier``."""

    features: nn.Module
    classifier: nn.Module

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class ConvNet(FeaturesThenClassifier):
    """depth x [conv3 -> norm -> ReLU -> avgpool2] -> linear (width 128, instance norm by default)."""

    def __init__(self, channels: int, n_classes: int, size: int, dims: int = 2, width: int = 128,
                 depth: int | None = None, norm: str = "instancenorm"):
        super().__init__()
        depth = depth or depth_for(size)
        if size >> depth < 1:
            raise ConfigError(f"ConvNet depth {depth} pools a {size} px input below one pixel")
        self.depth = depth

        def make() -> nn.Sequential:
            layers: list[nn.Module] = []
            c = channels
            for _ in range(depth):
                layers += [_CONV[dims](c, width, 3, padding=1), norm_layer(norm, width, dims), nn.ReLU(inplace=False),
                           _AVGPOOL[dims](2, 2)]
                c = width
            return nn.Sequential(*layers)

        self.features = make()
        self.classifier = nn.Linear(_flat_features(make, channels, size, dims), n_classes)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ReLU output of every block, then the final pooled map (CAFE's layer-wise features)."""
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i % 4 == 2:
                maps.append(x)
        maps.append(x)
        return maps


class LeNet(FeaturesThenClassifier):
    """conv5(6) -> ReLU -> maxpool -> conv5(16) -> ReLU -> maxpool -> fc 120 -> fc 84 -> fc classes."""

    def __init__(self, channels: int, n_classes: int, size: int, dims: int = 2):
        super().__init__()

        def make() -> nn.Sequential:
            return nn.Sequential(_CONV[dims](channels, 6, 5, padding=2), nn.ReLU(), _MAXPOOL[dims](2, 2),
                                 _CONV[dims](6, 16, 5), nn.ReLU(), _MAXPOOL[dims](2, 2))

        self.features = make()
        n = _flat_features(make, channels, size, dims)
        self.classifier = nn.Sequential(nn.Linear(n, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                        nn.Linear(84, n_classes))


class AlexNet(FeaturesThenClassifier):
    """The small CIFAR-style AlexNet of the DC code (no normalisation by default)."""

    def __init__(self, channels: int, n_classes: int, size: int, dims: int = 2, norm: str = "none"):
        super().__init__()
        conv, pool = _CONV[dims], _MAXPOOL[dims]

        def block(cin: int, cout: int, k: int) -> list[nn.Module]:
            return [conv(cin, cout, k, padding=k // 2), norm_layer(norm, cout, dims), nn.ReLU()]

        def make() -> nn.Sequential:
            return nn.Sequential(*block(channels, 128, 5), pool(2, 2), *block(128, 192, 5), pool(2, 2),
                                 *block(192, 256, 3), *block(256, 192, 3), *block(192, 192, 3), pool(2, 2))

        self.features = make()
        self.classifier = nn.Linear(_flat_features(make, channels, size, dims), n_classes)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str, dims: int):
        super().__init__()
        conv = _CONV[dims]
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, cout, dims)
        self.conv2 = conv(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, cout, dims)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), norm_layer(norm, cout, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet18 (3x3 stem, no max-pool); instance norm unless ``norm='batchnorm'``.

    The final map is average-pooled to 1x1 (adaptive) so any resolution works.
    """

    def __init__(self, channels: int, n_classes: int, size: int, dims: int = 2, norm: str = "instancenorm"):
        super().__init__()
        self.stem = nn.Sequential(_CONV[dims](channels, 64, 3, padding=1, bias=False), norm_layer(norm, 64, dims),
                                  nn.ReLU())
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride, norm, dims), BasicBlock(cout, cout, 1, norm, dims)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = _ADAPTIVE_AVG[dims](1)
        self.classifier = nn.Linear(512, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# -------------------------------------------------------------------------------------- factories
register_network("convnet")(ConvNet)
register_network("convnet_bn")(lambda channels, n_classes, size, dims=2, **kw:
                                ConvNet(channels, n_classes, size, dims, norm="batchnorm", **kw))
register_network("lenet")(LeNet)
register_network("alexnet")(AlexNet)
register_network("alexnet_bn")(lambda channels, n_classes, size, dims=2:
                               AlexNet(channels, n_classes, size, dims, norm="batchnorm"))
register_network("resnet18")(ResNet18)
register_network("resnet18_bn")(lambda channels, n_classes, size, dims=2:
                                ResNet18(channels, n_classes, size, dims, norm="batchnorm"))


@torch.no_grad()
def init_parameters(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default initialisation, drawn from ``generator`` on the CPU."""
    for m in net.modules():
        w = getattr(m, "weight", None)
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            fan_in = nn.init._calculate_fan_in_and_fan_out(w)[0]
            if isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
                fan_in = w.shape[0] * w[0, 0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            # kaiming_uniform_(a=sqrt(5)) has bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in)
            w.copy_(torch.empty(w.shape).uniform_(-bound, bound, generator=generator))
            if m.bias is not None:
                m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=generator))
        elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)):
            if w is not None:
                w.fill_(1.0)
                m.bias.zero_()
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.reset_running_stats()
    return net


def create_network(name: str, channels: int, n_classes: int, size: int, dims: int = 2, *,
                   generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                   **kwargs) -> nn.Module:
    """Build a registered network, initialised from ``generator`` (seeded 0 if none)."""
    factory = NETWORKS.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with torch.device("meta"):
        net = factory(channels, n_classes, size, dims, **kwargs)
    net = net.to_empty(device="cpu")
    init_parameters(net, generator if generator is not None else torch.Generator().manual_seed(0))
    return net.to(device)


def flat_parameters(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

