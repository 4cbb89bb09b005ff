"""Time and peak memory of one trajectory-matching iteration against the number of unrolled steps.

    python benchmarks/bench_unroll.py [--steps 10 20 40 80] [--ipc 10] [--classes 2] [--repeats 3]

For every step count, in a fresh subprocess each (so peak RSS belongs to that configuration alone),
one `mddbench.nn.unroll.match` iteration (ConvNet, 1x28x28, ipc x classes images, DSA, backward into
the images and the step size) is timed, and three memory figures are reported:
- graph MB: bytes of the tensors autograd saved for the backward pass (what grows with steps),
- peak RSS MB: the subprocess's maximum resident set (includes PyTorch itself, ~300-400 MB),
- CUDA peak MB when run with --device cuda.
Both `full` (exact) and `constant` (TESLA) memory modes are measured. Ratios are against the first
step count in the same run. Run it on an otherwise idle machine: with 2 cores, another process
distorts CPU timings many times over.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(steps: int, ipc: int, classes: int, memory: str, repeats: int, device: str, size: int = 28,
        channels: int = 1) -> dict:
    import torch

    from mddbench.nn.augment import DSA
    from mddbench.nn.networks import create_network
    from mddbench.nn.unroll import Student, TensorSource, match

    torch.set_num_threads(max(1, torch.get_num_threads()))
    dev = torch.device(device)
    net = create_network("convnet", channels, classes, size, 2, device=dev)
    student = Student(net)
    g = torch.Generator().manual_seed(0)
    start = torch.randn(student.size, generator=g).to(dev) * 0.05
    target = start + 0.01 * torch.randn(student.size, generator=g).to(dev)
    images = torch.randn(ipc * classes, channels, size, size, generator=g).to(dev).requires_grad_(True)
    labels = torch.arange(classes, device=dev).repeat_interleave(ipc)
    lr = torch.tensor(0.01, device=dev, requires_grad=True)

    def run():
        return match(student, TensorSource(images, labels), lr, start, target, steps=steps, generator=g,
                     augment=DSA(), memory=memory)

    graph_mb = run().graph_mb  # warm-up; the unroll's own census of what autograd saved
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"steps": steps, "memory": memory, "seconds": min(times), "graph_mb": graph_mb,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", nargs="+", default=["full", "constant"])
    ap.add_argument("--size", type=int, default=28, help="image size (112: the BREAST-ULS, COVID and HAM10000 sets)")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        steps, memory = args.child.split(":")
        print(json.dumps(one(int(steps), args.ipc, args.classes, memory, args.repeats, args.device, args.size,
                             args.channels)))
        return
    rows = []
    for memory in args.modes:
        for steps in args.steps:
            out = subprocess.run([sys.executable, __file__, "--child", f"{steps}:{memory}", "--ipc", str(args.ipc),
                                  "--classes", str(args.classes), "--repeats", str(args.repeats),
                                  "--device", args.device, "--size", str(args.size), "--channels", str(args.channels)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"one matching iteration, ConvNet {args.channels}x{args.size}x{args.size}, {args.ipc} ipc x {args.classes} "
          f"classes, device {args.device}")
    print(f"{'mode':9} {'steps':>5} {'s/iter':>8} {'x time':>7} {'graph MB':>9} {'x graph':>8} {'peak RSS MB':>12}"
          + (f" {'CUDA MB':>8}" if args.device != "cpu" else ""))
    for memory in args.modes:
        base = next(r for r in rows if r["memory"] == memory)
        for r in (r for r in rows if r["memory"] == memory):
            line = (f"{memory:9} {r['steps']:>5} {r['seconds']:>8.3f} {r['seconds'] / base['seconds']:>7.2f} "
                    f"{r['graph_mb']:>9.1f} {r['graph_mb'] / max(base['graph_mb'], 1e-9):>8.2f} {r['rss_mb']:>12.0f}")
            if r["cuda_mb"] is not None:
                line += f" {r['cuda_mb']:>8.1f}"
            print(line)


if __name__ == "__main__":
    main()
