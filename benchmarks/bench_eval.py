"""Evaluation engines compared: one network at a time ("loop") versus all together ("batched").

For each case the same synthetic set (a random real subset, ``ipc`` images per class) is evaluated
by both engines in this process with the same seed; the script prints each engine's time, the
speed-up (loop time / batched time), the speed-up of the training alone (set-up and scoring, timed
by a 0-epoch run, subtracted: what a 1000-epoch evaluation sees) and whether the per-model test
accuracies agree.

It also prints how fast each engine does arithmetic: the training's convolution and matrix-product
FLOPs (counted by ``torch.utils.flop_counter``) over its time, against a large float32 matrix
product timed in this process, the rate this machine's BLAS reaches. Packing does not change the
arithmetic, so ``matmul rate / loop rate`` bounds the speed-up any engine can get from training
the networks together (it could get it only by running its convolutions as efficiently as one big
matrix product and its memory-bound passes for free).

    python benchmarks/bench_eval.py                     # n = 10 models, 20 epochs per case
    python benchmarks/bench_eval.py --epochs 100 --threads 2 --cases breast-ipc2 3d-ipc2

Every epoch is the same work, so a short run gives the ratio of a full evaluation. Over hundreds
of epochs the engines' float rounding differences grow (training is chaotic; the loop itself
diverges as much between 1 and 2 threads), so agreement is checked on short runs only.
Timings on a shared machine are distorted by other processes.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import DatasetSpec, RawArrays, RealData, load_dataset
from mddbench.evaluation.protocol import EvalConfig, evaluate

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def random_3d(size: int = 28, n_classes: int = 3) -> RealData:
    """Random 1 x size^3 volumes (3 classes): only the engines' speed and agreement matter here."""
    rng = np.random.default_rng(0)
    counts = {"train": 20, "val": 2, "test": 4}  # few scored volumes: the training is what is compared
    images = {s: rng.integers(0, 256, (n * n_classes,) + (size,) * 3, dtype=np.uint8) for s, n in counts.items()}
    labels = {s: np.repeat(np.arange(n_classes), n)[:, None].astype(np.uint8) for s, n in counts.items()}
    spec = DatasetSpec(name="random3d", title="random3d", source="generated", dims=3, channels=1, size=size,
                       label_names=tuple("abc"[:n_classes]), task="multi-class", license="-", citation="-",
                       description="-", load=lambda spec, root, offline: RawArrays(images, labels, "random"))
    return load_dataset(spec)


def random_subset(data: RealData, ipc: int, seed: int = 0) -> SyntheticSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([data.sample_class(c, ipc, g) for c in range(data.n_classes)])
    return SyntheticSet(x, torch.arange(data.n_classes).repeat_interleave(ipc))


def cases(epochs: int) -> dict[str, tuple]:
    """name -> (data loader, ipc, epochs)."""
    def breast() -> RealData:
        return load_dataset("breastmnist", SHARED_DATA if (SHARED_DATA / "breastmnist.npz").exists() else None)

    def demo() -> RealData:
        return load_dataset("demo")

    return {"breast-ipc2": (breast, 2, epochs), "breast-ipc10": (breast, 10, epochs),
            "demo-ipc2": (demo, 2, epochs), "demo-ipc10": (demo, 10, epochs),
            "3d-ipc2": (random_3d, 2, max(2, epochs // 5))}


def _ratio(a: float, b: float) -> float:
    """a / b, or nan when either is too short to mean anything (scoring dominated a tiny run)."""
    return a / b if min(a, b) > 0.05 else float("nan")


def matmul_gflops(device: str = "cpu", size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a float32 ``size x size`` matrix product here: the rate the BLAS reaches."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):  # the fastest product counts, like the engines' fastest run
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_gflop(synset: SyntheticSet, data: RealData, config: EvalConfig, device: str) -> float:
    """Convolution and matrix-product GFLOP of training one network for ``config.epochs`` epochs."""
    counts = []
    for epochs in (0, config.epochs):  # the 0-epoch run counts the scoring, subtracted
        with FlopCounterMode(display=False) as counter:
            evaluate(synset, data, config.with_(n_models=1, epochs=epochs), device=device, progress=False,
                     engine="loop")
        counts.append(counter.get_total_flops())
    return (counts[1] - counts[0]) / 1e9


def run(name: str, load, ipc: int, epochs: int, n_models: int, repeats: int, device: str = "cpu",
        peak: float = float("nan")) -> dict:
    data = load()
    synset = random_subset(data, ipc)
    config = EvalConfig(n_models=n_models, epochs=epochs)
    times: dict[str, list[float]] = {"loop": [], "batched": []}
    fixed: dict[str, list[float]] = {"loop": [], "batched": []}  # set-up and scoring alone (0 epochs)
    results = {}
    for _ in range(repeats):  # alternate the engines so that a burst of load hits both alike
        for engine in times:
            fixed[engine].append(evaluate(synset, data, config.with_(epochs=0), device=device, progress=False,
                                        engine=engine).seconds)
            res = evaluate(synset, data, config, seed=0, device=device, progress=False, engine=engine)
            assert res.engine == engine
            times[engine].append(res.seconds)
            results[engine] = res
    loop, batched = ([m["test_acc"] for m in results[e].per_model] for e in times)
    t_loop, t_batched = min(times["loop"]), min(times["batched"])
    gflop = n_models * training_gflop(synset, data, config, device)
    rate = {e: gflop / max(min(times[e]) - min(fixed[e]), 1e-9) for e in times}
    row = {"case": name, "classes": data.n_classes, "ipc": ipc, "epochs": epochs, "loop_s": t_loop,
           "batched_s": t_batched, "speedup": t_loop / t_batched,
           "train_speedup": _ratio(t_loop - min(fixed["loop"]), t_batched - min(fixed["batched"])),
           "acc_equal": loop == batched, "max_acc_diff": float(np.max(np.abs(np.subtract(loop, batched)))),
           "mean_acc": float(np.mean(batched)), "loop_gflops": rate["loop"], "batched_gflops": rate["batched"],
           "bound": peak / rate["loop"]}
    print(f"{name:12s} {data.n_classes} classes ipc {ipc:2d}, {n_models} models x {epochs:3d} epochs: "
          f"loop {t_loop:7.1f} s, batched {t_batched:7.1f} s, speed-up x{row['speedup']:.2f} "
          f"(training alone x{row['train_speedup']:.2f}); per-model test acc equal: {row['acc_equal']} "
          f"(max diff {row['max_acc_diff']:.4f}, mean {row['mean_acc']:.3f})\n"
          f"{'':12s} training arithmetic: loop {rate['loop']:.0f} GFLOP/s, batched {rate['batched']:.0f} GFLOP/s, "
          f"matrix product {peak:.0f} GFLOP/s: no packing of this arithmetic beats the loop by more than "
          f"x{row['bound']:.1f}", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="epochs per 2D case (3D: a fifth, at least 2)")
    p.add_argument("--n-models", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=1, help="runs per engine; the fastest counts")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--fp32", action="store_true",
                   help="GPU: TF32 off and deterministic cuDNN, for the agreement check (TF32 rounds grouped "
                        "and separate convolutions differently, and training amplifies it)")
    p.add_argument("--cases", nargs="*", default=None, help=f"default: all of {', '.join(cases(1))}")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fp32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    print(f"torch {torch.__version__} on {args.device} ({where}), {torch.get_num_threads()} threads on "
          f"{os.cpu_count()} cores, load average {load}")
    peak = matmul_gflops(args.device)
    print(f"float32 matrix product ({args.device}): {peak:.0f} GFLOP/s")
    table = cases(args.epochs)
    rows = [run(name, *table[name], args.n_models, args.repeats, args.device, peak) for name in (args.cases or table)]
    if not all(r["acc_equal"] for r in rows):
        print("WARNING: per-model accuracies differ in", [r["case"] for r in rows if not r["acc_equal"]])


if __name__ == "__main__":
    main()
