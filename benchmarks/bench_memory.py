"""Peak memory, kernel share and wall time of whole commands, before and after bounded memory (issue 41).

Each piece is one ``mddbench`` command (``run`` at the smoke budget on BREAST-ULS, ipc 2 and 10, and
on AdrenalMNIST3D, or ``buffers`` for expert building) run in a fresh process under each setting,
alternating (which setting goes first alternates by round), so the settings see the same machine:

- ``before``: whole batches (``MDDBENCH_MEMORY_BUDGET`` unbounded) with the allocator's raised
  thresholds, what the code did before micro-batches;
- ``after``: the defaults (an automatic activation budget: micro-batches; the raised thresholds);
- ``heap`` (``--settings``): micro-batches with the heap-only allocator (``MDDBENCH_ALLOCATOR=heap``),
  the other lever the issue proposed; ``heap-whole``: heap only with whole batches.

The parent reads each child's peak resident set, user and system CPU seconds from ``wait4`` and
prints a table (median over rounds) with the ratios before / after. Expert buffers are built once
per setting and round in their own cache (``buffers`` pieces time that); ``run`` pieces share one
cache built beforehand, so they time distillation and evaluation alone.

    python benchmarks/bench_memory.py --pieces experts-112 dm-2 ptm-2 --rounds 1
    python benchmarks/bench_memory.py --all --rounds 1 --json memory.json   # every method, hours on a CPU
    # quick's shapes (its batches, steps and micro-batches) for a few iterations and one short evaluation:
    python benchmarks/bench_memory.py --budget quick --pieces dm-10:iterations=50 --eval-n-models 1 --eval-epochs 10

Nothing else may run on the machine meanwhile: with 2 cores a second process distorts timings many
times over. Piece names: ``experts-112``, ``flat-experts-112``, ``experts-3d``, ``experts-28`` (BreastMNIST),
``METHOD-IPC``
(BREAST-ULS; ``METHOD-IPC:key=value,...`` adds hyperparameters, e.g. ``ptm-10:unroll_memory=constant``),
``3d-METHOD`` (AdrenalMNIST3D, ipc 1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# as the tests read it (tests/conftest.py): a relative value is taken from the repository's root, not the cwd
SHARED_DATA = REPO / Path(os.environ.get("MDDBENCH_TEST_DATA") or "../shared/data")
SETTINGS = {
    "before": {"MDDBENCH_ALLOCATOR": "thresholds", "MDDBENCH_MEMORY_BUDGET": "1e9"},
    "after": {},
    "heap": {"MDDBENCH_ALLOCATOR": "heap"},
    "heap-whole": {"MDDBENCH_ALLOCATOR": "heap", "MDDBENCH_MEMORY_BUDGET": "1e9"},
}
METHODS_2D = ("random", "real", "dc", "dsa", "dm", "cafe", "mtt", "ftd", "datm", "ptm", "smdd", "seqmatch", "haba",
              "hoptm", "ncfm", "herding", "kcenter")
METHODS_3D = ("random", "dc", "dsa", "dm")
EXPERT_PIECES = ("experts-112", "flat-experts-112", "experts-3d", "experts-28")  # `buffers` pieces; the rest run


def command(piece: str, work: Path, cache: Path, budget: str = "smoke", evaluation: tuple[str, ...] = ()) -> list[str]:
    """The mddbench command line of one piece (``evaluation``: run options added to a run piece)."""
    common = ["--data-root", str(SHARED_DATA), "--device", "cpu", "--quiet", "--budget", budget]
    if piece in EXPERT_PIECES:
        dataset = {"experts-3d": "adrenalmnist3d", "experts-28": "breastmnist"}.get(piece, "breast-uls")
        method = "ftd" if piece.startswith("flat") else "mtt"
        return ["buffers", "--dataset", dataset, "--method", method, "--expert-cache", str(work / "fresh"),
                "--out", str(work / "out"), *common]
    method, dataset, ipc, hps = run_piece(piece)
    return ["run", "--method", method, "--dataset", dataset, "--ipc", ipc, "--expert-cache", str(cache),
            "--out", str(work / "out"), *common, *evaluation, *[a for hp in hps.split(",") if hp for a in ("--hp", hp)]]


def run_piece(piece: str) -> tuple[str, str, str, str]:
    """A run piece's method, dataset, ipc and hyperparameters: ``ptm-10:unroll_memory=constant``, ``3d-dm``."""
    piece, _, hps = piece.partition(":")
    if piece.startswith("3d-"):
        return piece[3:], "adrenalmnist3d", "1", hps
    method, _, ipc = piece.rpartition("-")
    return method, "breast-uls", ipc, hps


def measure(argv: list[str], env: dict[str, str], threads: int) -> dict[str, float]:
    """Run ``mddbench argv`` in a fresh process; its wall seconds, CPU seconds, kernel share and peak RSS."""
    child_env = {**os.environ, **env, "OMP_NUM_THREADS": str(threads)}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_"):
        child_env.pop(name, None)  # the child's own setting decides, not this process's
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mddbench", *argv], env=child_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"mddbench {' '.join(argv)} failed:\n{err[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "kernel_share": usage.ru_stime / cpu if cpu else 0.0, "peak_rss_mb": usage.ru_maxrss / 1024}


def prebuild(pieces: list[str], cache: Path, threads: int, budget: str = "smoke") -> None:
    """The expert buffers the run pieces read, built once (not timed): ``mddbench buffers`` for each piece's
    method builds what that method declares (``Method.expert_recipes``; nothing for a method that reads none),
    and a buffer two methods share (PTM's and FTD's flat experts) is built once."""
    from mddbench.api.method import Method
    from mddbench.registry import METHODS

    runs = {run_piece(p)[:2] for p in pieces if p not in EXPERT_PIECES}
    # a method that reads experts declares them (it overrides Method.expert_recipes); the others need none
    for method, dataset in sorted((m, d) for m, d in runs if METHODS[m].expert_recipes is not Method.expert_recipes):
        argv = ["buffers", "--dataset", dataset, "--method", method, "--expert-cache", str(cache), "--out",
                str(cache.parent / "prebuild"), "--data-root", str(SHARED_DATA), "--device", "cpu", "--quiet",
                "--budget", budget]
        print(f"building the experts {method} reads on {dataset}, if any (not timed) ...", flush=True)
        measure(argv, {}, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pieces", nargs="+", default=["experts-112", "random-2", "dm-2"])
    parser.add_argument("--all", action="store_true", help="every method at ipc 2 and 10, 3D and expert pieces")
    parser.add_argument("--settings", nargs="+", default=["before", "after"], choices=list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--budget", default="smoke", help="the pieces' budget (default: smoke)")
    parser.add_argument("--eval-n-models", type=int, help="fewer evaluation networks for every run piece (its peak "
                        "is that of one network's training; default: the budget's)")
    parser.add_argument("--eval-epochs", type=int, help="fewer evaluation epochs for every run piece (default: the budget's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write every measurement here")
    parser.add_argument("--cache", help="keep the prebuilt expert buffers here, for the next invocation")
    args = parser.parse_args()
    pieces = args.pieces
    evaluation = tuple(a for flag, v in (("--eval-n-models", args.eval_n_models), ("--eval-epochs", args.eval_epochs))
                       if v is not None for a in (flag, str(v)))
    if args.all:
        pieces = (["experts-112", "flat-experts-112", "experts-3d"] + [f"{m}-{i}" for i in (2, 10) for m in METHODS_2D]
                  + [f"3d-{m}" for m in METHODS_3D])
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "experts"
        prebuild(pieces, cache, args.threads, args.budget)
        for r in range(args.rounds):
            for piece in pieces:
                order = args.settings if r % 2 == 0 else list(reversed(args.settings))
                for name in order:
                    work = Path(tmp) / f"{piece}-{name}-{r}"
                    m = measure(command(piece, work, cache, args.budget, evaluation), SETTINGS[name], args.threads)
                    results.setdefault((piece, name), []).append(m)
                    print(f"round {r} {piece:>18} {name:>10}: {m['wall_s']:7.1f} s wall, "
                          f"{m['kernel_share']:5.1%} kernel, {m['peak_rss_mb']:7.0f} MB peak", flush=True)
    print(f"\nmedians over {args.rounds} round(s), {args.threads} thread(s), {args.budget} budget; "
          "ratio = before / after")
    head = f"{'piece':>18} | " + " | ".join(f"{s}: wall s, kernel, peak MB" for s in args.settings)
    print(head + (" | wall ratio, peak ratio" if {"before", "after"} <= set(args.settings) else ""))
    summary = {}
    for piece in pieces:
        cells, med = [], {}
        for name in args.settings:
            runs = results[(piece, name)]
            med[name] = {k: statistics.median(m[k] for m in runs) for k in runs[0]}
            cells.append(f"{med[name]['wall_s']:7.1f} {med[name]['kernel_share']:6.1%} {med[name]['peak_rss_mb']:7.0f}")
        line = f"{piece:>18} | " + " | ".join(cells)
        if "before" in med and "after" in med:
            line += (f" | x{med['before']['wall_s'] / med['after']['wall_s']:.2f}, "
                     f"x{med['before']['peak_rss_mb'] / med['after']['peak_rss_mb']:.2f}")
        print(line)
        summary[piece] = med
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "medians": summary,
                                               "runs": {f"{p}|{s}": v for (p, s), v in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
