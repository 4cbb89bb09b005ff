"""Curves and figures from run folders: the analogues of the PTM paper's Figures 3, 4a and 5a.

- :func:`accuracy_curve` evaluates the snapshots a run kept (``--snapshot-every N``) and writes
  ``curve.json``: test and val accuracy, plain and balanced, against distillation wall time (Figure 3a).
- :func:`plot_runs` draws, for one or more runs: accuracy against time (3a), per-iteration memory
  and time against the PTM stage (3b), the matching loss per iteration (4a) and the intra-class
  MMD between the foundation and complement halves per stage (5a).
Figures come only from logged numbers; nothing is re-run while plotting.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mddbench.api.loop import read_log  # noqa: E402
from mddbench.atomic import write_json  # noqa: E402
from mddbench.errors import ConfigError  # noqa: E402


def run_log(run_dir: Path) -> tuple[str, list[dict]]:
    """(method name, rows) of the run's distillation log."""
    logs = sorted(Path(run_dir).glob("*_log.jsonl"))
    if not logs:
        raise ConfigError(f"{run_dir} has no *_log.jsonl (is it a run folder of a distillation method?)")
    return logs[0].name[: -len("_log.jsonl")], [r for p in logs for r in read_log(p)]


def read_run_json(path: Path, remedy: str) -> Any:
    """A JSON file of a run folder, or ConfigError naming the file, what is wrong and ``remedy``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({type(exc).__name__}: {exc}); {remedy}") from exc


def run_label(run_dir: Path) -> str:
    path = Path(run_dir) / "job.json"
    job = read_run_json(path, "delete it to label the run by its folder name") if path.exists() else {}
    job = job if isinstance(job, dict) else {}
    from mddbench.report.leaderboard import variant  # the leaderboard's row label: every override, and a time budget

    differs = variant({"overrides": dict(job.get("hparams") or []), "time_budget": job.get("time_budget")})
    name = job.get("method") or Path(run_dir).name
    return f"{name} ({differs})" if differs else name


CURVE_METRICS = ("test_acc", "val_acc", "balanced_acc", "val_balanced_acc")


def accuracy_curve(run_dir: Path, evaluate_fn, points: int | None = None,
                   settings: dict | None = None, progress: bool = False) -> list[dict]:
    """Evaluate the snapshots of a run with ``evaluate_fn(synset) -> EvalResult``; write curve.json.

    ``points``: evaluate at most this many, evenly spaced over the run and always the last one
    (a long run keeps hundreds of snapshots; every one is a full evaluation).
    ``settings`` (the evaluation's, e.g. networks and epochs) are kept with every point. curve.json is
    rewritten after each point, so a killed curve loses at most the point in progress; a point
    already there with the same settings and every metric of :data:`CURVE_METRICS` is not evaluated
    again, and points of other settings (or older files without balanced accuracy) are replaced.
    """
    from mddbench.api.synset import SyntheticSet

    run_dir = Path(run_dir)
    snaps = sorted((run_dir / "snapshots").glob("it*.safetensors"))
    if not snaps:
        raise ConfigError(f"{run_dir} kept no snapshots; rerun with --snapshot-every N")
    if points is not None and 0 < points < len(snaps):
        picks = np.linspace(len(snaps) - 1, 0, points).round().astype(int)
        snaps = [snaps[i] for i in sorted(set(picks.tolist()))]
    settings = dict(settings or {})
    path = run_dir / "curve.json"
    done = {}
    if path.exists():
        old = read_run_json(path, "delete it to evaluate the curve again")
        done = {p["iteration"]: p for p in old if isinstance(p, dict)
                and p.get("settings") == settings and all(k in p for k in CURVE_METRICS)}
    curve = []
    for snap in tqdm(snaps, desc=f"curve {run_dir.name}", unit="snapshot", disable=not progress, leave=False):
        synset = SyntheticSet.load(snap)
        point = done.get(synset.meta["iteration"])
        if point is None:
            summary = evaluate_fn(synset).summary()
            point = {"iteration": synset.meta["iteration"], "seconds": synset.meta["seconds"],
                     "test_acc": summary["test_acc"]["mean"], "test_std": summary["test_acc"]["std"],
                     **{k: summary[k]["mean"] for k in CURVE_METRICS if k != "test_acc"},
                     "settings": settings}
            done[point["iteration"]] = point
            write_json(path, [done[i] for i in sorted(done)], indent=2)
        curve.append(point)
    return curve


def _stage_means(rows: list[dict], key: str, stage_key: str = "end_epoch") -> tuple[list, list]:
    stages = sorted({r[stage_key] for r in rows if stage_key in r and key in r})
    return stages, [float(np.mean([r[key] for r in rows if r.get(stage_key) == s])) for s in stages]


def plot_runs(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(run_label(d), *run_log(d), d) for d in run_dirs]
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)

    curves = [(label, read_run_json(d / "curve.json", f"rerun `mddbench curve {d}` to write it again"))
              for label, _, _, d in runs
              if (d / "curve.json").exists()]
    if curves:
        # balanced accuracy beside accuracy once any curve has it (curves written before it had none)
        keys = [("test_acc", "test accuracy (%)")]
        if any("balanced_acc" in p for _, pts in curves for p in pts):
            keys.append(("balanced_acc", "test balanced accuracy (%)"))
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
        for ax, (key, ylabel) in zip(axes[0], keys):
            for label, pts in curves:
                pts = [p for p in pts if key in p]
                ax.plot([p["seconds"] for p in pts], [100 * p[key] for p in pts], marker="o", label=label)
            ax.set(xlabel="distillation time (s)", ylabel=ylabel, title="against time (Fig. 3a)")
            ax.legend(fontsize=7)
        save(fig, "fig3a_accuracy_vs_time.png")

    staged = [(label, rows) for label, _, rows, _ in runs if any("end_epoch" in r for r in rows)]
    if staged:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for label, rows in staged:
            key = "graph_mb" if any("graph_mb" in r for r in rows) else "peak_mb"
            stages, mem = _stage_means(rows, key)
            axes[0].plot(stages, mem, marker="o", label=f"{label} ({key})")
            times = [b["seconds"] - a["seconds"] for a, b in zip(rows, rows[1:])]
            per = [dict(r, dt=t) for r, t in zip(rows[1:], times)]
            stages, dt = _stage_means(per, "dt")
            axes[1].plot(stages, dt, marker="o", label=label)
        axes[0].set(xlabel="stage (end epoch t)", ylabel="memory per iteration (MB)", title="memory (Fig. 3b)")
        axes[1].set(xlabel="stage (end epoch t)", ylabel="seconds per iteration", title="time per iteration")
        axes[0].legend(fontsize=7)
        save(fig, "fig3b_memory_vs_stage.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, _, rows, _ in runs:
        key = "match_loss" if any("match_loss" in r for r in rows) else "loss"
        ax.plot([r["it"] for r in rows], [r[key] for r in rows], label=label, linewidth=0.8)
    ax.set(xlabel="iteration", ylabel="matching loss", title="matching loss (Fig. 4a)", yscale="log")
    ax.legend(fontsize=7)
    save(fig, "fig4a_matching_loss.png")

    mmd = [(label, rows) for label, _, rows, _ in runs if any("mmd" in r for r in rows)]
    if mmd:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for label, rows in mmd:
            stages, values = _stage_means(rows, "mmd")
            ax.plot(stages, values, marker="o", label=label)
        ax.set(xlabel="stage (end epoch t)", ylabel="intra-class MMD^2 (S^f vs S^c)", title="overlap (Fig. 5a)")
        ax.legend(fontsize=7)
        save(fig, "fig5a_intra_class_mmd.png")
    return written
