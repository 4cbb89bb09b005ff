"""Networks: every registered network at every input kind, seeded initialisation, ConvNet geometry."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mddbench.errors import ConfigError
from mddbench.nn.networks import ConvNet, LeNet, create_network, depth_for, flat_parameters
from mddbench.registry import NETWORKS

SHAPES = [(1, 28, 28), (3, 28, 28), (3, 112, 112), (1, 28, 28, 28)]
N_CLASSES = 5


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", NETWORKS.names())
def test_output_shapes_for_every_input_kind(name):
    for shape in SHAPES:
        net = create_network(name, shape[0], N_CLASSES, shape[1], len(shape) - 1, generator=seeded(0))
        x = torch.randn(2, *shape, generator=seeded(1))
        with torch.no_grad():
            out = net(x)
            embedding = net.embed(x)
        assert out.shape == (2, N_CLASSES), (name, shape)
        assert torch.isfinite(out).all() and out.std() > 0
        # the classifier is sized from the real feature map (the official code's table breaks for RGB 28 px)
        first_linear = next(m for m in net.modules() if isinstance(m, nn.Linear))
        assert embedding.shape == (2, first_linear.in_features), (name, shape)


@pytest.mark.parametrize("name", ["convnet", "convnet_bn", "lenet", "alexnet", "resnet18_bn"])
def test_seed_fixes_the_initialisation(name):
    def make(seed: int) -> nn.Module:
        return create_network(name, 3, 4, 28, 2, generator=seeded(seed))

    rng_before = torch.get_rng_state()
    a, b, c = state(make(7)), state(make(7)), state(make(8))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never touched
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    random_weights = [k for k, v in a.items() if v.is_floating_point() and v.numel() > 1 and v.std() > 0]
    assert random_weights and all(not torch.equal(a[k], c[k]) for k in random_weights)
    # no generator: the same as seed 0, not whatever the global RNG holds
    torch.manual_seed(123)
    default = state(create_network(name, 3, 4, 28, 2))
    assert all(torch.equal(default[k], v) for k, v in state(make(0)).items())


def test_initialisation_is_pytorchs_default_scheme():
    net = create_network("convnet", 3, 10, 28, generator=seeded(0))
    weight = net.features[0].weight.detach()
    bound = 1 / (3 * 3 * 3) ** 0.5  # 1 / sqrt(fan_in)
    assert bound >= weight.abs().max() > 0.9 * bound
    assert float(weight.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.1)  # uniform(-b, b)
    norm = net.features[1]
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 128  # instance norm, the DC/MTT convention
    assert torch.equal(norm.weight, torch.ones(128)) and torch.equal(norm.bias, torch.zeros(128))


def test_convnet_depth_and_flatten_size_by_resolution():
    assert [depth_for(s) for s in (28, 32, 64, 112, 128)] == [3, 3, 4, 5, 5]
    cases = [  # (channels, size, dims) -> (depth, flatten features)
        ((1, 28, 2), (3, 128 * 3 * 3)),
        ((3, 28, 2), (3, 128 * 3 * 3)),
        ((3, 64, 2), (4, 128 * 4 * 4)),
        ((3, 112, 2), (5, 128 * 3 * 3)),  # 112 -> 56 -> 28 -> 14 -> 7 -> 3
        ((1, 28, 3), (3, 128 * 3 * 3 * 3)),
    ]
    for (channels, size, dims), (depth, flat) in cases:
        net = ConvNet(channels, 4, size, dims)
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        assert net.depth == len(convs) == depth
        assert net.classifier.in_features == flat
        maps = net.feature_maps(torch.zeros(1, channels, *(size,) * dims))
        assert len(maps) == depth + 1 and maps[-1].flatten(1).shape[1] == flat
    assert LeNet(1, 2, 28).classifier[0].in_features == 16 * 5 * 5
    assert LeNet(3, 2, 112).classifier[0].in_features == 16 * 26 * 26
    with pytest.raises(ConfigError, match="below one pixel"):
        ConvNet(1, 2, 28, depth=6)


def test_feature_maps_are_the_relu_outputs():
    net = create_network("convnet", 1, 3, 28, generator=seeded(0))
    x = torch.randn(2, 1, 28, 28, generator=seeded(1))
    maps = net.feature_maps(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(128, 28, 28), (128, 14, 14), (128, 7, 7), (128, 3, 3)]
    assert all((m >= 0).all() for m in maps[:-1])
    torch.testing.assert_close(maps[-1].flatten(1), net.embed(x))
    torch.testing.assert_close(net.classifier(maps[-1].flatten(1)), net(x))
    assert flat_parameters(net).numel() == sum(p.numel() for p in net.parameters())


def test_unknown_norm_and_network():
    with pytest.raises(ConfigError, match="unknown norm"):
        ConvNet(1, 2, 28, norm="layer")
    with pytest.raises(KeyError, match="unknown network 'vgg11'"):
        create_network("vgg11", 1, 2, 28)
