"""glibc's default allocator settings against mddbench's (:mod:`mddbench.allocator`), side by side.

Each piece of a representative mix runs in a fresh process, once under each setting, alternating
(which setting goes first alternates by round), so the two see the same machine. A child times
only its piece (imports and data loading excluded) and reports its wall, user and sys seconds; the
script prints the medians, the ratios default / tuned and the whole mix's ratio.

    python benchmarks/bench_allocator.py                    # 3 rounds, 2 threads, BreastMNIST
    python benchmarks/bench_allocator.py --rounds 5 --pieces experts eval-ipc2

Pieces: ``experts`` (2 MTT experts x 4 epochs, built from scratch), ``mtt`` (20 iterations of MTT
distillation at ipc 2 against prebuilt quick experts), ``eval-ipc2`` / ``eval-ipc10`` (2 ConvNets x
60 epochs on a random real subset), ``3d-step`` (20 SGD steps of the 3D ConvNet at batch 8, 28^3).
Nothing else may run on the machine meanwhile: with 2 cores a second process distorts timings
many times over.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PIECES = ("experts", "mtt", "eval-ipc2", "eval-ipc10", "3d-step")


def _common(work: Path) -> list[str]:
    return ["--data-root", str(SHARED_DATA), "--device", "cpu", "--quiet", "--out", str(work / "out")]


def prepare(piece: str, work: Path) -> tuple[callable, callable]:
    """(setup, timed) for one piece, in the child process."""
    import torch

    from mddbench.cli import main
    from mddbench.data.dataset import load_dataset
    from mddbench.evaluation.protocol import EvalConfig, evaluate

    def warm_imports():  # what the commands import lazily, so that only the work itself is timed
        import mddbench.evaluation.protocol  # noqa: F401
        import mddbench.run.pipeline  # noqa: F401
        import mddbench.trajectory.experts  # noqa: F401
        from mddbench.registry import DATASETS, METHODS, NETWORKS

        for registry in (DATASETS, METHODS, NETWORKS):
            registry.load()

    if piece == "experts":
        args = ["buffers", "--dataset", "breastmnist", "--budget", "quick", "--experts", "2", "--epochs", "4",
                "--expert-cache", str(work / "fresh_experts"), *_common(work)]
        return warm_imports, (lambda: main(args))
    if piece == "mtt":
        args = ["distill", "--method", "mtt", "--dataset", "breastmnist", "--ipc", "2", "--budget", "quick",
                "--hp", "iterations=20", "--expert-cache", str(work / "quick_experts"), *_common(work)]
        return warm_imports, (lambda: main(args))
    if piece.startswith("eval-ipc"):
        ipc = int(piece.removeprefix("eval-ipc"))
        from bench_eval import random_subset

        state = {}

        def setup():
            state["data"] = load_dataset("breastmnist", SHARED_DATA)
            state["set"] = random_subset(state["data"], ipc)
        return setup, (lambda: evaluate(state["set"], state["data"], EvalConfig(n_models=2, epochs=60),
                                        progress=False, engine="loop"))
    if piece == "3d-step":
        from mddbench.nn.networks import create_network

        net = create_network("convnet", 1, 2, 28, dims=3)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(8, 1, 28, 28, 28), torch.arange(8) % 2

        def steps():
            for _ in range(20):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
        return steps, steps  # the first 20 steps warm up
    raise SystemExit(f"unknown piece {piece!r}; choose from {', '.join(PIECES)}")


def child(piece: str, work: Path, threads: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from mddbench.allocator import configure_allocator

    applied = configure_allocator()
    import torch

    torch.set_num_threads(threads)
    setup, timed = prepare(piece, work)
    setup()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    timed()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"applied": applied, "wall": wall, "user": after.ru_utime - before.ru_utime,
                      "sys": after.ru_stime - before.ru_stime, "faults": after.ru_minflt - before.ru_minflt}))


def run_child(piece: str, work: Path, threads: int, tuned: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MDDBENCH_ALLOCATOR"] = "tuned" if tuned else "default"
    out = subprocess.run([sys.executable, __file__, "--child", piece, "--work", str(work), "--threads", str(threads)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{piece} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["applied"] != tuned:
        raise SystemExit(f"{piece}: the allocator setting did not take effect as asked (tuned={tuned})")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pieces", nargs="+", default=list(PIECES), choices=PIECES)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, Path(args.work), args.threads)
    if not (SHARED_DATA / "breastmnist.npz").exists():
        raise SystemExit(f"needs {SHARED_DATA / 'breastmnist.npz'}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
          f"{args.rounds} rounds, medians")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "mtt" in args.pieces:  # the quick experts MTT reads, built once, untimed
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            subprocess.run([sys.executable, "-m", "mddbench", "buffers", "--dataset", "breastmnist", "--budget",
                            "quick", "--expert-cache", str(work / "quick_experts"), *_common(work)], check=True)
        results = {piece: {True: [], False: []} for piece in args.pieces}
        for r in range(args.rounds):
            for piece in args.pieces:
                for tuned in ((False, True) if r % 2 == 0 else (True, False)):
                    # experts built and sets distilled from scratch every time (a finished run is only loaded)
                    subprocess.run(["rm", "-rf", str(work / "fresh_experts"), str(work / "out")], check=True)
                    results[piece][tuned].append(run_child(piece, work, args.threads, tuned))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows, totals = [], {True: 0.0, False: 0.0}
    for piece, by in results.items():
        med = {t: {k: statistics.median(x[k] for x in by[t]) for k in ("wall", "user", "sys", "faults")} for t in by}
        totals[True] += med[True]["wall"]
        totals[False] += med[False]["wall"]
        rows.append((piece, med[False]["wall"], med[True]["wall"], med[False]["wall"] / med[True]["wall"],
                     med[False]["sys"], med[True]["sys"], med[False]["faults"], med[True]["faults"]))
    print(f"{'piece':<11} {'default s':>9} {'tuned s':>8} {'x':>5} {'sys def':>8} {'sys tuned':>9} "
          f"{'faults def':>10} {'faults tuned':>12}")
    for row in rows:
        print(f"{row[0]:<11} {row[1]:9.2f} {row[2]:8.2f} {row[3]:5.2f} {row[4]:8.2f} {row[5]:9.2f} "
              f"{row[6]:10.0f} {row[7]:12.0f}")
    print(f"{'whole mix':<11} {totals[False]:9.2f} {totals[True]:8.2f} {totals[False] / totals[True]:5.2f}")


if __name__ == "__main__":
    main()
