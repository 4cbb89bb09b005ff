"""Memory bounded by design (issue 41): a micro-batched pass computes what the whole batch computes.

Every check runs the same work twice, with an activation budget so small that batches split into
micro-batches of a few items, and unbounded, and compares the results to float tolerance.
"""

import pytest
import torch

from mddbench import memory
from mddbench.api.synset import SyntheticSet
from mddbench.errors import ConfigError
from mddbench.evaluation.protocol import EvalConfig, evaluate, predict
from mddbench.nn.networks import create_network
from mddbench.nn.training import constant_schedule, gsam_step, sgd_step, train

UNBOUNDED = "1e9"


@pytest.fixture
def budget(monkeypatch):
    """budget(mib): set this test's activation budget (the environment variable the CLI option sets)."""
    memory._state.clear()
    memory.reset_chosen()

    def set_to(mib: str) -> None:
        monkeypatch.setenv(memory.ENV, mib)
    yield set_to
    memory._state.clear()


def _net(seed: int = 0, size: int = 16, norm: str = "instancenorm") -> torch.nn.Module:
    model = "convnet" if norm == "instancenorm" else "convnet_bn"
    return create_network(model, 3, 4, size, generator=torch.Generator().manual_seed(seed))


def _tiny_budget_for(net, x, items: int) -> str:
    """A budget in MiB that gives micro-batches of ``items`` items for ``net`` on ``x``."""
    return repr(items * 2 * memory.per_item_bytes(net, x) / 2**20 * 1.0001)


def _train_once(net, x, y, step=sgd_step, epochs: int = 2) -> list[torch.Tensor]:
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    train(net, x, y, constant_schedule(opt, epochs, len(x)), 24, [torch.Generator().manual_seed(1)], step=step)
    return [p.detach().clone() for p in net.parameters()]


def _close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 1e-5) -> bool:
    return all(torch.allclose(u, v, rtol=tol, atol=tol) for u, v in zip(a, b))


def test_micro_batch_follows_the_budget_and_keeps_whole_batches_for_batchnorm(budget):
    net, x = _net(), torch.randn(4, 3, 16, 16)
    per_item = memory.per_item_bytes(net, x)
    budget(repr(10 * 2 * per_item / 2**20))
    assert memory.micro_batch(net, x, "train") == 10
    budget(repr(0.1 * per_item / 2**20))
    assert memory.micro_batch(net, x, "train") == 1  # never below one item
    assert memory.chosen()["micro_batch"]["train"] == 1 and memory.chosen()["budget_source"] == "set"
    assert memory.micro_batch(_net(norm="batchnorm"), x, "bn") > 10**9  # batch statistics need the whole batch
    assert memory.chosen()["micro_batch"]["bn"] == "whole batch (BatchNorm)"


def test_per_item_bytes_is_measured_alike_inside_no_grad():
    """Prediction and real embeddings ask from inside no_grad; the first answer is cached for every loop."""
    net, x = _net(), torch.randn(2, 3, 16, 16)
    memory._per_item.clear()
    with torch.no_grad():
        inside = memory.per_item_bytes(net, x), memory.per_item_bytes(net, x, net.feature_maps)
    memory._per_item.clear()
    assert inside == (memory.per_item_bytes(net, x), memory.per_item_bytes(net, x, net.feature_maps))
    assert inside[0] > 16 * 16 * 128 * 4


def test_per_item_bytes_grows_with_the_image_and_counts_frozen_networks():
    small, large = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 32, 32)
    assert memory.per_item_bytes(_net(size=32), large) > 3 * memory.per_item_bytes(_net(size=16), small)
    frozen = _net().requires_grad_(False)  # DM's networks: no parameter needs a gradient
    assert memory.per_item_bytes(frozen, small, frozen.embed) > 16 * 16 * 4  # the activations still count


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_a_bad_budget_is_refused(budget, value):
    budget(value)
    with pytest.raises(ConfigError, match=memory.ENV):
        memory.budget_bytes()


def test_a_micro_batched_sgd_step_equals_the_full_batch_step(budget):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 16, 16, generator=gen), torch.arange(40) % 4
    budget(UNBOUNDED)
    whole = _train_once(_net(), x, y)
    assert memory.chosen()["micro_batch"]["train"] >= 24
    budget(_tiny_budget_for(_net(), x, 5))
    micro = _train_once(_net(), x, y)
    assert memory.chosen()["micro_batch"]["train"] == 5  # batches of 24 ran as 5 + 5 + 5 + 5 + 4
    assert _close(whole, micro)
    assert not _close(whole, [p.detach() for p in _net().parameters()])  # it trained at all


def test_soft_labels_and_gsam_are_micro_batched_exactly(budget):
    gen = torch.Generator().manual_seed(0)
    x, soft = torch.randn(30, 3, 16, 16, generator=gen), torch.randn(30, 4, generator=gen)

    def gsam(net):
        return lambda backward, opt: gsam_step(list(net.parameters()), backward, opt, rho=0.05, alpha=0.3)

    results = []
    for mib in (UNBOUNDED, _tiny_budget_for(_net(), x, 4)):
        budget(mib)
        net = _net()
        results.append(_train_once(net, x, soft, step=gsam(net)))
    assert _close(*results)


def test_packed_networks_are_micro_batched_per_network(budget):
    """Evaluation's packed engine: each network keeps its own data order and loss under micro-batches."""
    from mddbench.nn.batched import stack_networks, unstack_into

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 3, 16, 16, generator=gen), torch.arange(30) % 4
    results = []
    for mib in (UNBOUNDED, _tiny_budget_for(_net(), x, 7)):
        budget(mib)
        nets = [_net(0), _net(1)]
        packed = stack_networks(nets, x[:2])
        opt = torch.optim.SGD(packed.parameters(), lr=0.05, momentum=0.9)
        train(packed, x, y, constant_schedule(opt, 2, 30), 16,
              [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
        results.append([p.clone() for net in unstack_into(packed, nets) for p in net.parameters()])
    assert _close(*results)


def test_dc_real_gradients_dm_and_cafe_real_passes_equal_the_whole_batch(budget):
    from mddbench.methods.cafe import cafe_loss
    from mddbench.methods.dc import class_gradients
    from mddbench.methods.dm import dm_loss

    gen = torch.Generator().manual_seed(0)
    reals = [torch.randn(20, 3, 16, 16, generator=gen) for _ in range(2)]
    syns = [torch.randn(3, 3, 16, 16, generator=gen).requires_grad_(True) for _ in range(2)]
    hp = dict(shallow_weight=0.1, deep_weight=1.0, output_weight=1.0, inner_weight=0.01)
    out = []
    for mib in (UNBOUNDED, _tiny_budget_for(_net(), reals[0], 3)):
        budget(mib)
        net = _net()
        grads = class_gradients(net, reals[0], 1)
        dm = dm_loss(net, reals, syns)
        cafe, _ = cafe_loss(net, reals, syns, hp)
        out.append([*grads, dm.detach(), cafe.detach(), *torch.autograd.grad(cafe, syns)])
    chosen = memory.chosen()["micro_batch"]
    assert chosen["real-gradient"] == 3 and 1 <= chosen["embed"] <= 3  # CAFE's maps weigh more than DM's embedding
    assert _close(*out, tol=1e-4)


@pytest.mark.slow
def test_a_small_runs_accuracy_is_unchanged_by_micro_batches(budget, breast):
    """Evaluation end to end (training, then prediction in chunks) on genuine BreastMNIST."""
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(breast.y["train"]), generator=gen)[:40]
    synset = SyntheticSet(breast.x["train"][idx], breast.y["train"][idx])
    config = EvalConfig(n_models=2, epochs=15, batch=32)
    results = []
    spec = breast.spec
    net = create_network("convnet", spec.channels, spec.n_classes, spec.size)
    for mib in (UNBOUNDED, _tiny_budget_for(net, breast.x["train"][:2], 3)):
        budget(mib)
        results.append(evaluate(synset, breast, config, seed=0, progress=False, engine="loop"))
    assert memory.chosen()["micro_batch"] == {"train": 3, "predict": 3}
    n_test = len(breast.y["test"])
    for whole, micro in zip(results[0].per_model, results[1].per_model):
        assert abs(whole["test_acc"] - micro["test_acc"]) <= 1 / n_test + 1e-9  # at most one prediction flips
        assert abs(whole["auc"] - micro["auc"]) < 1e-3


def test_predict_in_chunks_equals_one_pass(budget):
    net, x = _net(), torch.randn(25, 3, 16, 16)
    whole = predict(net, x, torch.device("cpu"), batch=25)
    budget(_tiny_budget_for(net, x, 4))
    assert torch.allclose(torch.from_numpy(predict(net, x, torch.device("cpu"))), torch.from_numpy(whole), atol=1e-6)
    assert memory.chosen()["micro_batch"]["predict"] == 4


def test_backward_in_micro_batches_weighs_an_uneven_last_part():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    x = torch.arange(10, dtype=torch.float32).view(5, 2)
    whole = (x @ w).pow(2).mean()
    (g_whole,) = torch.autograd.grad(whole, w)
    loss = memory.backward_in_micro_batches(lambda part: (x[part] @ w).pow(2).mean(), 5, 2)  # 2 + 2 + 1
    assert torch.allclose(loss, whole.detach()) and torch.allclose(w.grad, g_whole)


def test_a_constant_memory_unroll_in_micro_batches_equals_the_whole_batch(budget):
    """TESLA's recomputed steps, each split into parts: the same loss and image gradients."""
    from mddbench.nn.unroll import Student, TensorSource, match

    gen = torch.Generator().manual_seed(0)
    images0 = torch.randn(12, 3, 16, 16, generator=gen)
    labels = torch.arange(12) % 4
    net = _net()
    student = Student(net)
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    target = start + 0.01 * torch.randn(start.shape, generator=gen)
    out = []
    for mib in (UNBOUNDED, _tiny_budget_for(net, images0, 12)):  # micro-batches of 3 (a step keeps 4 graphs)
        budget(mib)
        images = images0.clone().requires_grad_(True)
        lr = torch.tensor(0.01, requires_grad=True)
        result = match(student, TensorSource(images, labels), lr, start, target, steps=3,
                       generator=torch.Generator().manual_seed(1), memory="constant")
        out.append((result.loss, result.ce, images.grad.clone(), lr.grad.clone()))
    assert memory.chosen()["micro_batch"]["unroll"] == 3
    (loss_a, ce_a, g_a, lr_a), (loss_b, ce_b, g_b, lr_b) = out
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and ce_a == pytest.approx(ce_b, rel=1e-5)
    assert torch.allclose(g_a, g_b, rtol=1e-4, atol=1e-7) and g_a.abs().sum() > 0
    assert torch.allclose(lr_a, lr_b, rtol=1e-4)


def test_gradient_caching_equals_the_whole_batch_for_a_coupled_loss():
    """HaBa's contrastive extractor loss and its club term couple every item: their gradients, computed with
    cached features in chunks of 3, equal one whole pass's, for the network and through x's own graph."""
    from mddbench.methods.haba import pair_cosine, supcon
    net = _net(seed=3)
    leaf = torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])

    def loss_of(embed):
        return (torch.nn.functional.cross_entropy(net.classifier(embed), y.repeat(2))
                + ((1 - pair_cosine(embed)) / 2).mean() + supcon(embed, y, 0.07, 0.07))

    grads = []
    for micro in (100, 3):
        net.zero_grad(set_to_none=True)
        leaf.grad = None
        x = torch.tanh(leaf) * 2  # a graph to a leaf, as a rendering has to the bases
        loss = memory.backward_through_features(net.embed, x, loss_of, micro)
        grads.append((loss, [p.grad.clone() for p in net.parameters()], leaf.grad.clone()))
    (whole_loss, whole_params, whole_x), (loss, params, gx) = grads
    assert torch.allclose(loss, whole_loss, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(params, whole_params))
    assert torch.allclose(gx, whole_x, rtol=1e-4, atol=1e-7) and gx.abs().sum() > 0
    assert all(p.abs().sum() > 0 for p in whole_params[-2:])  # the classifier got its share too
