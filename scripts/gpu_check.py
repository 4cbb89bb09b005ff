"""A few-minute GPU check: every method on the GPU at a small budget, with per-method time and peak memory.

    python scripts/gpu_check.py [--dataset breastmnist] [--data-root .data] [--ipc 2] [--budget smoke]
                                [--out gpu_check_out] [--device cuda] [--benchmarks]

Each method runs as a normal job (distill + evaluate + record) on the device. All jobs share one
output folder, so the expert trajectories are built once (by the first trajectory method, whose
wall time includes it) and reused, as in a sweep. The table printed at the end gives distillation
seconds, evaluation seconds, the peak device memory of distillation, test accuracy and wall time.
With --benchmarks it then runs the two benchmark scripts on the same device: the evaluation
engines (one-by-one vs batched, n = 10, speed-up and per-model agreement) and the unroll (time and
peak memory against 10, 20, 40, 80 unrolled steps).

Exit status 1 if any method failed. For the device tool: copy ../shared/data/*.npz into an ignored
`.data/` folder and name it in the call's carry list. `--device cpu` runs the same check here.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def check_methods(args) -> tuple[list[dict], list[str]]:
    from mddbench.registry import METHODS
    from mddbench.run.job import Job
    from mddbench.run.pipeline import run_job

    rows, failed = [], []
    for method in args.methods or METHODS.names():
        job = Job(method=method, dataset=args.dataset, ipc=args.ipc,
                  budget=args.budget, data_root=args.data_root, out=args.out, device=args.device, progress=False)
        t0 = time.perf_counter()
        try:
            rec = run_job(job)[0]
        except Exception:
            failed.append(method)
            traceback.print_exc()
            continue
        row = {"method": method, "distill_s": rec["distill_seconds"], "eval_s": rec["eval_seconds"],
               "peak_mb": rec["peak_memory_mb"], "test_acc": 100 * rec["metrics"]["test_acc"]["mean"],
               "wall_s": time.perf_counter() - t0, "device": rec["device"], "engine": rec.get("eval_engine")}
        rows.append(row)
        print(f"{method:10} distill {row['distill_s']:7.1f} s  eval {row['eval_s']:6.1f} s  "
              f"peak {row['peak_mb']:7.0f} MB  test acc {row['test_acc']:6.2f}  wall {row['wall_s']:6.1f} s",
              flush=True)
    return rows, failed


def bench(script: str, *extra: str) -> int:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *extra]
    print("\n$", " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd, env={**os.environ, "MDDBENCH_DATA": os.environ.get("MDDBENCH_DATA", ".data")})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--data-root", default=".data")
    ap.add_argument("--ipc", type=int, default=2)
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--methods", nargs="*")
    ap.add_argument("--benchmarks", action="store_true", help="also run the eval-engine and unroll benchmarks")
    args = ap.parse_args()
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("no CUDA device: this check is for a GPU machine (or pass --device cpu)", file=sys.stderr)
            return 2
        print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    rows, failed = check_methods(args)
    print(f"\n{'method':10} {'distill s':>10} {'eval s':>8} {'peak MB':>9} {'test acc':>9} {'wall s':>8}")
    for r in rows:
        print(f"{r['method']:10} {r['distill_s']:>10.1f} {r['eval_s']:>8.1f} {r['peak_mb']:>9.0f} "
              f"{r['test_acc']:>9.2f} {r['wall_s']:>8.1f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    if args.benchmarks:
        bench("bench_eval.py", "--device", args.device, "--epochs", "100", "--cases", "breast-ipc2", "breast-ipc10",
              "3d-ipc2")
        bench("bench_unroll.py", "--device", args.device, "--repeats", "3")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
