"""Wall time of one small sweep run three ways: experts first (the old sweep), the scheduler, and Ray.

  before  every expert buffer built one after another in this process with all cores, then the jobs
          in --jobs workers (what `mddbench sweep` did before experts became works of their own)
  local   `mddbench sweep --jobs N`: recipes build in parallel, a job starts when its own experts exist
  ray     `mddbench sweep --executor ray`: the same works as Ray tasks (a local Ray instance unless
          --ray-address), --cpus-per-job cores/jobs; Ray's start-up counts, it is part of the cost

Each way starts from an empty output folder with its own expert cache, so each builds its experts.
Run it on an otherwise idle machine:

    python benchmarks/bench_sweep.py --datasets retinamnist --budget quick --jobs 2 --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from mddbench.scaleout.sweep import expand, plan, run_sweep
from mddbench.scaleout.work import usable_cores


def before(jobs, workers: int) -> list:
    torch.set_num_threads(usable_cores())
    for work in plan(jobs).works:
        if work.experts is not None:
            work.experts.run(jobs[0].device)
    return run_sweep(jobs, workers=workers, progress=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["mtt", "ftd", "random"],
                    help="default: two expert recipes (mtt's SGD, ftd's GSAM) and a method without experts")
    ap.add_argument("--datasets", nargs="+", default=["retinamnist"])
    ap.add_argument("--ipc", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-root")
    ap.add_argument("--ways", nargs="+", default=["before", "local", "ray"], choices=["before", "local", "ray"])
    ap.add_argument("--ray-address", help="a running cluster (default: start Ray on this machine)")
    ap.add_argument("--workdir", default="/tmp/mddbench_bench_sweep", help="emptied first; one folder per way")
    args = ap.parse_args(argv)

    rows = []
    for way in args.ways:
        out = Path(args.workdir) / way
        shutil.rmtree(out, ignore_errors=True)
        jobs = expand(args.methods, args.datasets, args.ipc, args.seeds, budget=args.budget, data_root=args.data_root,
                      out=str(out), expert_cache=str(out / "experts"), device=args.device)
        start = time.perf_counter()
        if way == "before":
            outcomes = before(jobs, args.jobs)
        elif way == "local":
            outcomes = run_sweep(jobs, workers=args.jobs, progress=False)
        else:
            from mddbench.scaleout.ray_cluster import RayExecutor

            executor = RayExecutor(args.ray_address, args.device, cpus_per_job=max(1, usable_cores() // args.jobs))
            outcomes = run_sweep(jobs, progress=False, executor=executor)
        wall = time.perf_counter() - start
        failed = sum(not o.ok for o in outcomes)
        rows.append((way, wall, len(jobs), failed))
        print(f"{way:>7}: {wall:8.1f} s  {len(jobs)} jobs  {3600 * len(jobs) / wall:7.1f} jobs/h  {failed} failed",
              flush=True)
    print(f"\n{len(jobs)} jobs ({' '.join(args.methods)} on {' '.join(args.datasets)}, ipc "
          f"{' '.join(map(str, args.ipc))}, {args.budget} budget), --jobs {args.jobs}, {usable_cores()} cores, "
          f"torch {torch.__version__}, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
    print("| way | wall time (s) | jobs/hour |\n|---|---|---|")
    for way, wall, n, _ in rows:
        print(f"| {way} | {wall:.0f} | {3600 * n / wall:.1f} |")
    return 1 if any(r[3] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
