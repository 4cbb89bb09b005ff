"""The batched evaluation engine trains each network exactly as the one-by-one reference loop does."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from methodkit import load

from mddbench.api.synset import RENDERERS, SyntheticSet
from mddbench.evaluation.protocol import (
    EvalConfig,
    epoch_schedule,
    evaluate,
    model_streams,
    score,
    train_networks,
    train_on_synset,
)
from mddbench.nn.augment import DSA
from mddbench.nn.batched import NotPackable, augment_together, stack_networks, unstack_into
from mddbench.nn.networks import create_network, flat_parameters

CPU = torch.device("cpu")
CONFIG = EvalConfig(n_models=2, epochs=3, batch=4)  # 9 images -> batches of 4, 4, 1; lr drop at epoch 1


class Jitter:
    """A test renderer that draws from the model's generator, like HaBa's hallucinator choice."""

    def render(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images + 0.1 * torch.randn(images.shape, generator=generator)

    def to(self, device):
        return self


@pytest.fixture(autouse=True)
def jitter_renderer(monkeypatch):
    monkeypatch.setitem(RENDERERS, "test-jitter", lambda extra, meta: Jitter())


class ChannelMixer(nn.Module):
    """A network whose forward mixes channels (subtracts their mean): packing it changes its numbers."""

    def __init__(self, channels: int, n_classes: int, size: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = nn.Linear(8 * size * size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fc((x - x.mean(1, keepdim=True)).flatten(1))


def test_epoch_schedule_resets_sgd_at_each_phase_and_at_half_time():
    synset = SyntheticSet(torch.zeros(5, 1, 4, 4), torch.zeros(5, dtype=torch.long), stages=[2, 3],
                          stage_lrs=[0.1, 0.2])
    got = [(end, round(lr, 6), fresh) for end, lr, fresh in epoch_schedule(synset, EvalConfig(epochs=4))]
    assert got == [(2, 0.1, True), (2, 0.1, False), (2, 0.01, True), (2, 0.01, False),
                   (5, 0.2, True), (5, 0.2, False), (5, 0.02, True), (5, 0.02, False)]
    assert [fresh for *_, fresh in epoch_schedule(SyntheticSet(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long)),
                                                  EvalConfig(epochs=1))] == [True]


@pytest.mark.parametrize("op", DSA.OPS)
@pytest.mark.parametrize("dims", [2, 3])
def test_augment_together_equals_one_by_one(op, dims):
    aug = DSA(op)
    xs = [torch.randn(3, 2, *(6,) * dims, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    alone = [aug(x, torch.Generator().manual_seed(10 + i)) for i, x in enumerate(xs)]
    draws = [aug.sample(x, torch.Generator().manual_seed(10 + i)) for i, x in enumerate(xs)]
    for a, b in zip(alone, augment_together(aug, xs, draws)):
        assert torch.allclose(a, b, atol=1e-6)
    mixed = DSA()  # one op group per batch: batches that drew different ops are grouped apart
    draws = [mixed.sample(x, torch.Generator().manual_seed(i)) for i, x in enumerate(xs)]
    assert len({d[0].op for d in draws}) > 1
    for i, b in enumerate(augment_together(mixed, xs, draws)):
        assert torch.allclose(mixed(xs[i], torch.Generator().manual_seed(i)), b, atol=1e-6)


def synsets(data) -> dict[str, SyntheticSet]:
    g = torch.Generator().manual_seed(1)
    x, y = data.x["train"][:9], data.y["train"][:9]
    return {"hard": SyntheticSet(x, y, lr=0.02),
            "soft": SyntheticSet(x, torch.randn(9, data.n_classes, generator=g)),
            "staged": SyntheticSet(x, y, stages=[3, 6], stage_lrs=[0.02, 0.005]),
            "rendered": SyntheticSet(x, y, renderer="test-jitter")}


def both_engines(synset: SyntheticSet, data, model: str = "convnet", config: EvalConfig = CONFIG, seed: int = 0):
    """(networks trained one by one, networks trained together), from the same streams.

    ConvNets are 32 wide here to keep the tests fast; the evaluate() tests use the protocol's.
    """
    spec = data.spec
    kw = {"width": 32} if model == "convnet" else {}

    def nets() -> list[nn.Module]:
        return [create_network(model, spec.channels, spec.n_classes, spec.size, spec.dims,
                               generator=model_streams(seed, i, model)[0], **kw) for i in range(config.n_models)]

    loop = [train_on_synset(net, synset, config, model_streams(seed, i, model)[1], CPU)
            for i, net in enumerate(nets())]
    together = train_networks(nets(), synset, config, [model_streams(seed, i, model)[1]
                                                       for i in range(config.n_models)], CPU)
    return loop, together


def assert_same(loop, together, data) -> None:
    for a, b in zip(loop, together):
        pa, pb = flat_parameters(a), flat_parameters(b)
        assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-6), float((pa - pb).abs().max())
        sa, sb = score(a, data, CPU), score(b, data, CPU)
        assert (sa["test_acc"], sa["val_acc"]) == (sb["test_acc"], sb["val_acc"])
        assert sa["auc"] == pytest.approx(sb["auc"], abs=1e-2)  # a near-tie may swap at float rounding
    # the networks really differ from one another (own init, data order and augmentation)
    assert not torch.allclose(flat_parameters(together[0]), flat_parameters(together[1]))


@pytest.mark.parametrize("kind", ["hard", "soft", "staged", "rendered"])
def test_batched_equals_loop(kind):
    data = load("tiny28")
    loop, together = both_engines(synsets(data)[kind], data)
    assert_same(loop, together, data)


def test_batched_equals_loop_haba_renderer():
    """HaBa's renderer (a random hallucinator per base, drawn from each network's own stream)."""
    haba = pytest.importorskip("mddbench.methods.haba")
    data = load("tiny28")
    hallucinators = haba.Hallucinators.create(3, 1, 1, (28, 28), torch.Generator().manual_seed(0))
    with torch.no_grad():
        for h in hallucinators.styles:  # hallucinators that differ, so the draw matters
            h.shift.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    synset = SyntheticSet(data.x["train"][:9], data.y["train"][:9], lr=0.02, renderer="haba",
                          extra=hallucinators.tensors())
    loop, together = both_engines(synset, data, config=CONFIG.with_(epochs=1))
    assert_same(loop, together, data)


def test_batched_equals_loop_3d():
    data = load("tiny3d")
    loop, together = both_engines(synsets(data)["hard"], data, config=CONFIG.with_(epochs=2))
    assert_same(loop, together, data)


def test_batched_equals_loop_lenet():
    data = load("tiny28")
    loop, together = both_engines(synsets(data)["soft"], data, model="lenet")
    assert_same(loop, together, data)


def test_evaluate_engines_agree_and_repeat():
    data = load("tiny28")
    synset = synsets(data)["hard"]
    config = CONFIG.with_(epochs=2)
    loop = evaluate(synset, data, config, seed=5, progress=False, engine="loop")
    batched = evaluate(synset, data, config, seed=5, progress=False, engine="batched")
    again = evaluate(synset, data, config, seed=5, progress=False, engine="batched")
    assert (loop.engine, batched.engine, again.engine) == ("loop", "batched", "batched")
    assert [m["test_acc"] for m in loop.per_model] == [m["test_acc"] for m in batched.per_model]
    assert batched.per_model == again.per_model
    assert len({m["auc"] for m in batched.per_model}) > 1  # per-model numbers, not one model repeated


def test_packs_of_a_memory_budget_give_the_same_numbers(monkeypatch):
    import mddbench.evaluation.protocol as ev

    data = load("tiny28")
    synset = synsets(data)["soft"]
    config = CONFIG.with_(n_models=3, epochs=1)
    whole = evaluate(synset, data, config, progress=False, engine="batched")
    monkeypatch.setattr(ev, "pack_size", lambda *args: 2)  # packs of 2 + 1 networks
    split = evaluate(synset, data, config, progress=False, engine="batched")
    assert whole.engine == split.engine == "batched" and whole.per_model == split.per_model
    monkeypatch.setattr(ev, "pack_size", lambda *args: 1)
    assert evaluate(synset, data, config, progress=False, engine="batched").engine == "loop"


def test_batchnorm_networks_fall_back_to_the_loop():
    data = load("tiny28")
    synset = synsets(data)["hard"]
    config = CONFIG.with_(model="convnet_bn", epochs=1)
    assert evaluate(synset, data, config, progress=False).engine == "loop"
    assert evaluate(synset, data, CONFIG.with_(epochs=1), progress=False).engine == "loop"  # auto on a CPU
    with pytest.raises(NotPackable, match="BatchNorm"):
        evaluate(synset, data, config, progress=False, engine="batched")


def test_a_forward_that_mixes_channels_is_refused():
    nets = [ChannelMixer(1, 3, 28) for _ in range(2)]
    stack_networks(nets)  # the layers alone can be packed ...
    with pytest.raises(NotPackable, match="differs"):  # ... but the probe shows the forward cannot
        stack_networks(nets, torch.randn(2, 1, 28, 28))


def test_pack_and_unpack_resnet_and_alexnet():
    """Packing is exact for the other registered architectures (forward check, parameters round trip)."""
    probe = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    for model in ("resnet18", "alexnet"):
        nets = [create_network(model, 3, 4, 28, generator=torch.Generator().manual_seed(i)) for i in range(2)]
        stacked = stack_networks(nets, probe)  # raises if the packed forward differs
        copies = [create_network(model, 3, 4, 28, generator=torch.Generator().manual_seed(9)) for _ in range(2)]
        unstack_into(stacked, copies)
        assert all(torch.equal(flat_parameters(a), flat_parameters(b)) for a, b in zip(nets, copies))
