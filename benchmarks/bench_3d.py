"""What real 3D costs on this machine, before anyone plans a 3D table: the 3D ConvNet's SGD step and its
inference per volume at 28^3, and what they make of a budget's three shared costs on a 3D dataset
(AdrenalMNIST3D by default): evaluating one synthetic set, building one kind of expert buffer, and the
`real` row. Each time is the median of ``--rounds`` after a warm-up, with ``--threads`` threads (1: one
job per core, as ``mddbench sweep --jobs`` runs them).

    python benchmarks/bench_3d.py                        # quick, ipc 1, AdrenalMNIST3D, 1 thread
    python benchmarks/bench_3d.py --budget medium --ipc 1 10 --threads 2

The estimates are counts times measured step costs; a method's own distillation (its real batches, its
unrolls) comes on top and is not estimated here. Nothing else may run on the machine meanwhile: with
2 cores a second process distorts timings many times over.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from mddbench.api.budgets import get_budget
from mddbench.data.dataset import get_spec
from mddbench.evaluation.protocol import EvalConfig
from mddbench.nn.networks import create_network
from mddbench.trajectory.experts import ExpertRecipe

EVAL_BATCH = EvalConfig().batch  # evaluation networks, the `real` row's among them, train at this batch
EXPERT_BATCH = ExpertRecipe().batch


def _median_seconds(fn, rounds: int) -> float:
    fn()  # warm-up: the first call allocates
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(channels: int, size: int, batches: list[int], infer_batch: int, rounds: int) -> tuple[dict[int, float], float]:
    """(seconds per SGD step at each batch size, seconds of inference per volume)."""
    net = create_network("convnet", channels, 2, size, dims=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    step = {}
    for b in batches:
        x, y = torch.randn(b, channels, size, size, size), torch.randint(0, 2, (b,))

        def one_step():
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        step[b] = _median_seconds(one_step, rounds)
    x = torch.randn(infer_batch, channels, size, size, size)
    with torch.no_grad():
        infer = _median_seconds(lambda: net(x), rounds) / infer_batch
    return step, infer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="adrenalmnist3d")
    p.add_argument("--budget", default="quick")
    p.add_argument("--ipc", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--infer-batch", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec, budget = get_spec(args.dataset), get_budget(args.budget)
    if spec.dims != 3:
        raise SystemExit(f"{args.dataset} is {spec.dims}D; this benchmark is for 3D datasets")
    n = spec.n_samples
    n_classes = len(spec.label_names)
    batches = sorted({min(ipc * n_classes, EVAL_BATCH) for ipc in args.ipc} | {32})
    step, infer = measure(spec.channels, spec.size, batches, args.infer_batch, args.rounds)
    per_volume_large = step[32] / 32  # per-volume cost flattens by batch 32 on a CPU: a large batch costs this per volume
    print(f"{args.dataset} ({spec.channels}x{spec.size}^3, train {n['train']} / val {n['val']} / test {n['test']}), "
          f"{args.threads} thread(s), budget {budget.name} v{budget.version}")
    for b in batches:
        print(f"  SGD step, batch {b:>3}: {step[b]:.3f} s ({step[b] / b * 1000:.0f} ms per volume)")
    print(f"  inference: {infer * 1000:.0f} ms per volume")
    scoring = (n["val"] + n["test"]) * infer  # every evaluation network is scored on val and test
    for ipc in args.ipc:
        images = ipc * n_classes
        steps = budget.eval_epochs * math.ceil(images / EVAL_BATCH)
        per_set = budget.eval_models * (steps * step[min(images, EVAL_BATCH)] + scoring)
        print(f"  evaluating one ipc {ipc} set ({budget.eval_models} nets x {steps} steps + scoring): "
              f"{per_set / 60:.0f} min")
    per_epoch = n["train"] * per_volume_large  # at batch EXPERT_BATCH, per the flat per-volume cost
    print(f"  one expert buffer ({budget.experts} experts x {budget.expert_epochs} epochs at batch {EXPERT_BATCH}): "
          f"{budget.experts * budget.expert_epochs * per_epoch / 3600:.1f} h")
    real_steps = max(budget.real_epochs * math.ceil(n["train"] / EVAL_BATCH), budget.real_min_steps)
    real = budget.eval_models * (real_steps * EVAL_BATCH * per_volume_large + scoring)
    print(f"  the `real` row ({budget.eval_models} nets x {real_steps} steps at batch {EVAL_BATCH}): {real / 3600:.1f} h")


if __name__ == "__main__":
    main()
