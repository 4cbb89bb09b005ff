"""CAFE: Condense dataset by Aligning FEatures (Wang et al., CVPR'22), docs/methods.md 4.4.

One iteration of the official ``distill.py``: a fresh random ConvNet, then the dynamic bi-level
loop. *Outer*: one SGD step on the images (lr_img 0.1, momentum 0.5, halved at 60/80/90% of the
iterations: the official 1200/1600/1800 of 2000), then the net's accuracy on fresh real images
(``batch_acc`` = 128 per class, fewer if the class is smaller); the iteration ends when the last
``window`` = 10 accuracies span less than ``lambda_1`` = 0.04. *Inner*, after every image step
that does not end the iteration: train the net on the synthetic set one epoch at a time (SGD
lr_net 0.01, batch 256) until the last ``window`` accuracies span more than ``lambda_2`` = 0.03.

The image objective, with per-class means over the batch of every map of ``net.feature_maps``
(each block's post-ReLU map, then the final pooled map) and of the flattened output ``f``:

    sum_l w_l ||mean_c real_l - mean_c syn_l||^2               (layer-wise feature alignment)
    + output_weight ||mean_c f(real) - mean_c f(syn)||^2          (output-level term)
    + inner_weight CE_sum(f(real) . [mean_c f(syn)]^T, labels)    (discrimination loss)

Layer weights (:func:`layer_weights`): the last block's map and the final pooled map weigh
``deep_weight`` (1.0), every earlier block ``shallow_weight`` (0.1). At depth 3 this is the
official f1 0.1, f2 0.1, f3 1.0, f4 1.0; deeper nets (112 px: depth 5) keep the two deepest maps
at full weight and damp every larger, earlier map, which is what the official weights do. As in
the official code, the output-level term repeats the pooled map's term (``f`` is that map
flattened), so the final map counts twice.

Caps (documented budget guards the official code lacks): the official loops stop only on the
accuracy windows, and with few classes the accuracy estimate is noisy enough that the outer window
may never settle (and a flat one never lets the inner loop end). ``max_outer`` bounds the image
steps per iteration and ``max_inner`` the epochs per inner loop; the iteration also ends at the
outer cap, without the inner loop that would be thrown away with the net.

Deviations from the official code, besides the caps: no hard-coded 10 classes and 3x32x32 (class
means come from each class's own count, so small classes work); the accuracy of each check is the
mean over classes of a fresh measurement (the official accumulator is never reset, a quirk that
leaks earlier checks into later ones by a class-count dependent factor); accuracies are measured
in eval mode (only BatchNorm notices); the ``CE(net(real))`` term of the official loss is dropped
because it has no gradient with respect to the images; the net's gradients are never computed
during image steps. Siamese DSA (``dsa=true``) is the official CAFE+DSA variant: one shared draw
per class for the image step, per-sample DSA when training the net. Nothing persists across
iterations except the images and their optimiser (the net, its plain-SGD optimiser and the windows
are rebuilt every iteration), so resuming at an iteration boundary repeats a run exactly.

Budgets: ``quick`` runs its share of the official iterations (2 %: 40) with a window of 3, caps of
5, and 64 real / 32 check images per class (BreastMNIST ipc 10: about 160 single-thread CPU
seconds, one to two minutes on two cores); ``smoke`` is the same loop at test size.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mddbench.api.budgets import Budget, official_share
from mddbench.api.loop import distill_loop
from mddbench.api.method import Method, Task
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec
from mddbench.errors import ConfigError
from mddbench.limits import AT_LEAST_1, MOMENTUM, NON_NEGATIVE, POSITIVE
from mddbench.memory import in_chunks, micro_batch
from mddbench.methods.dm import class_views, dsa_or_none, per_class, siamese_batches
from mddbench.nn.augment import DEFAULT_STRATEGY
from mddbench.nn.networks import has_batchnorm
from mddbench.nn.training import constant_schedule, train
from mddbench.registry import NETWORKS, register_method

MILESTONES = (0.6, 0.8, 0.9)  # the official 1200, 1600, 1800 of 2000 iterations


# ------------------------------------------------------------------------------ the losses
def layer_weights(n_blocks: int, shallow: float = 0.1, deep: float = 1.0) -> list[float]:
    """Weights of ``feature_maps``' ``n_blocks + 1`` maps: earlier blocks shallow, the last block and the pool deep."""
    return [shallow] * (n_blocks - 1) + [deep, deep]


def feature_alignment(real: list[list[torch.Tensor]], syn: list[list[torch.Tensor]], weights: list[float]
                      ) -> torch.Tensor:
    """sum_l w_l sum_c ||real[c][l] - syn[c][l]||^2 over per-class mean maps (the official MSE, sum reduction)."""
    total = 0.0
    for l, w in enumerate(weights):
        r = torch.stack([maps[l] for maps in real])
        s = torch.stack([maps[l] for maps in syn])
        total = total + w * ((r - s) ** 2).sum()
    return total


def discrimination_loss(real_emb: torch.Tensor, real_labels: torch.Tensor, syn_means: torch.Tensor,
                        weight: float) -> torch.Tensor:
    """``weight`` x CE_sum(real embeddings . per-class mean synthetic embeddings^T, real labels)."""
    return weight * F.cross_entropy(real_emb @ syn_means.t(), real_labels, reduction="sum")


def cafe_loss(net: torch.nn.Module, reals: list[torch.Tensor], syns: list[torch.Tensor], hp: dict[str, Any]
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The image objective for one batch of real and synthetic images per class, and its terms."""

    def stats(maps: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [m.mean(0) for m in maps], maps[-1].flatten(1)

    def real_stats(batch: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``stats`` of a real batch without a graph, micro-batched within the memory budget: a sum
        per map, divided once, instead of every full-resolution map of the batch held at once."""
        micro = micro_batch(net, batch, "embed", net.feature_maps)
        if len(batch) <= micro:
            return stats(net.feature_maps(batch))
        sums, rows = None, []
        for part in batch.split(micro):
            maps = net.feature_maps(part)
            sums = [m.sum(0) for m in maps] if sums is None else [t + m.sum(0) for t, m in zip(sums, maps)]
            rows.append(maps[-1].flatten(1))
        return [t / len(batch) for t in sums], torch.cat(rows)

    with torch.no_grad():
        if has_batchnorm(net):  # BatchNorm sees every class in one pass, as in the official code
            real = per_class(net.feature_maps, reals, True, stats)
        else:
            real = [real_stats(batch) for batch in reals]
    syn = per_class(net.feature_maps, syns, True, stats)
    weights = layer_weights(len(real[0][0]) - 1, hp["shallow_weight"], hp["deep_weight"])
    align = feature_alignment([r[0] for r in real], [s[0] for s in syn], weights)
    real_out = torch.stack([r[1].mean(0) for r in real])
    syn_out = torch.stack([s[1].mean(0) for s in syn])
    output = hp["output_weight"] * ((real_out - syn_out) ** 2).sum()
    real_emb = torch.cat([r[1] for r in real])
    labels = torch.cat([torch.full((len(r[1]),), c, device=real_emb.device) for c, r in enumerate(real)])
    disc = discrimination_loss(real_emb, labels, syn_out, hp["inner_weight"])
    total = align + output + disc
    return total, {k: float(v.detach()) for k, v in
                   (("loss", total), ("align", align), ("output", output), ("disc", disc))}


# ------------------------------------------------------------------------ the bi-level loop
def lr_at(it: int, iterations: int, lr: float) -> float:
    """lr halved at 60%, 80% and 90% of the iterations (``it >= milestone``, as the official schedule)."""
    return lr * 0.5 ** sum(it >= round(f * iterations) for f in MILESTONES)


@torch.no_grad()
def real_accuracy(net: torch.nn.Module, task: Task, per_class_n: int) -> float:
    """Mean over classes of the accuracy on ``per_class_n`` fresh real images of each class."""
    net.eval()
    accs = []
    for c in range(task.n_classes):
        x = task.real_batch(c, per_class_n)
        accs.append(float((in_chunks(net, x, micro_batch(net, x, "predict")).argmax(1) == c).float().mean()))
    net.train()
    return sum(accs) / len(accs)


def spread(window: list[float]) -> float:
    return max(window) - min(window)


def push(window: list[float], value: float, size: int) -> list[float]:
    return (window + [value])[-size:]


@register_method("cafe")
class CAFE(Method):
    summary = "layer-wise feature alignment + discrimination loss, dynamic bi-level loop"
    defaults: dict[str, Any] = dict(
        iterations=2000, lr_img=0.1, momentum_img=0.5, lr_net=0.01, batch_real=256, batch_train=256,
        batch_acc=128, init="noise", dsa=False, dsa_strategy=DEFAULT_STRATEGY, model="convnet",
        shallow_weight=0.1, deep_weight=1.0, output_weight=1.0, inner_weight=0.01,
        lambda_1=0.04, lambda_2=0.03, window=10, max_outer=50, max_inner=50)
    limits = dict(iterations=NON_NEGATIVE, lr_img=POSITIVE, momentum_img=MOMENTUM, lr_net=POSITIVE,
                  batch_real=AT_LEAST_1, batch_train=AT_LEAST_1, batch_acc=AT_LEAST_1, shallow_weight=NON_NEGATIVE,
                  deep_weight=NON_NEGATIVE, output_weight=NON_NEGATIVE, inner_weight=NON_NEGATIVE,
                  window=AT_LEAST_1, max_outer=AT_LEAST_1, max_inner=AT_LEAST_1)
    budgets = {
        "quick": dict(iterations=official_share, batch_real=64, batch_acc=32, window=3, max_outer=5, max_inner=5),
        "smoke": dict(iterations=10, batch_real=8, batch_acc=4, window=2, max_outer=2, max_inner=2),
    }

    def check(self, hp: dict, spec: DatasetSpec, ipc: int, budget: Budget) -> None:
        super().check(hp, spec, ipc, budget)
        with torch.device("meta"):
            net = NETWORKS.get(hp["model"])(spec.channels, spec.n_classes, spec.size, spec.dims)
        if not hasattr(net, "feature_maps"):
            raise ConfigError(f"cafe aligns layer-wise features and needs a ConvNet (model convnet or convnet_bn); "
                              f"{hp['model']!r} has no feature_maps")
        if hp["window"] < 1 or hp["max_outer"] < 1 or hp["max_inner"] < 1:
            raise ConfigError("cafe: window, max_outer and max_inner must be at least 1")

    def distill(self, task: Task) -> SyntheticSet:
        hp = task.hp
        images, labels, state = task.image_state()
        augment = dsa_or_none(hp["dsa_strategy"]) if hp["dsa"] else None

        def accuracy(net: torch.nn.Module) -> float:
            return real_accuracy(net, task, hp["batch_acc"])

        def train_net(net: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
            """Inner loop: epochs on the synthetic set until the accuracy window moves; returns the epochs run."""
            window: list[float] = []
            for epoch in range(1, hp["max_inner"] + 1):
                train(net, images.detach(), labels, constant_schedule(opt, 1, len(images)), hp["batch_train"],
                      [task.generator], augment)
                window = push(window, accuracy(net), hp["window"])
                if len(window) == hp["window"] and spread(window) > hp["lambda_2"]:
                    break
            return epoch

        def step(it: int) -> dict[str, Any]:
            """One official iteration: a fresh net, image steps alternating with inner loops (outer loop)."""
            opt_img = state["opt_img"]
            for group in opt_img.param_groups:
                group["lr"] = lr_at(it, hp["iterations"], hp["lr_img"])
            net = task.network(generator=task.generator).train()
            opt_net = torch.optim.SGD(net.parameters(), lr=hp["lr_net"])
            window: list[float] = []
            terms: list[dict[str, float]] = []
            epochs = 0
            while True:
                reals, syns = siamese_batches(task, class_views(images, task.n_classes), hp["batch_real"], augment)
                loss, parts = cafe_loss(net, reals, syns, hp)
                images.grad, = torch.autograd.grad(loss, images)
                opt_img.step()
                terms.append(parts)
                window = push(window, accuracy(net), hp["window"])
                settled = len(window) == hp["window"] and spread(window) < hp["lambda_1"]
                if settled or len(terms) == hp["max_outer"]:
                    break
                epochs += train_net(net, opt_net)
            means = {k: sum(t[k] for t in terms) / len(terms) for k in terms[0]}
            return {**means, "loss_first": terms[0]["loss"], "outer_steps": len(terms), "inner_epochs": epochs,
                    "settled": int(settled), "acc_real": window[-1], "lr_img": opt_img.param_groups[0]["lr"]}

        distill_loop(task, hp["iterations"], state, step, lambda: task.synset(images, labels), name=self.name)
        return task.synset(images, labels)
