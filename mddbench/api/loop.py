"""The distillation loop every method runs: progress, metrics log, checkpoints, resume, NaN guard.

A method keeps its live objects (synthetic images, optimisers, generators, counters) in a
``state`` dict and passes a ``step(it) -> metrics`` function and a ``current() -> SyntheticSet``
view. :func:`distill_loop` then saves an atomic checkpoint every ``task.checkpoint_every``
iterations (the task generator included, so a resumed run repeats the uninterrupted one exactly),
resumes from one when it exists, logs every iteration to ``log.jsonl``, stops at a time budget,
keeps snapshots for accuracy-vs-time curves, and stops with :class:`DistillationDiverged` when the
loss or the images stop being finite, after saving the last good set beside the checkpoint.
A step whose metrics say ``stepped`` (0 or 1: whether a gated method applied its update) is
counted, so a record can tell a set that learned from one a gate left at its initialisation.
"""
from __future__ import annotations

import json
import logging
import math
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from mddbench.api.synset import SyntheticSet
from mddbench.atomic import replacing, set_aside, write_text
from mddbench.errors import CorruptRunState, DistillationDiverged

_log = logging.getLogger(__name__)


STEP_SIZE = "syn_lr"  # the metric of a learned student step size (the trajectory methods log it)
IMAGE_ADVICE = "Lower the image learning rate (--hp lr_img=...) or the number of unrolled steps."
STEP_SIZE_ADVICE = ("The learned step size is among them: lower its learning rate (--hp lr_lr=...), or the "
                    "image learning rate (--hp lr_img=...).")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on a GPU, the process's max RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------ checkpoint
class Checkpoint:
    """Atomic save/restore of a method's live state (tensors in place, optimisers, generators)."""

    def __init__(self, path: Path):
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()  # a folder in its place is refused by read() and set aside, not written over

    def save(self, state: dict[str, Any], extra: dict[str, Any]) -> None:
        payload = {"state": {k: _dump(v) for k, v in state.items()}, **extra}
        with replacing(self.path) as tmp:
            torch.save(payload, tmp)

    def read(self) -> dict[str, Any]:
        """The saved payload; CorruptRunState (nothing changed yet) when the file is not a whole checkpoint."""
        try:
            with warnings.catch_warnings():  # torch's warnings about foreign pickles are not for the user
                warnings.simplefilter("ignore")
                payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # EOFError (empty), RuntimeError (truncated zip), UnpicklingError (not tensors)
            raise CorruptRunState(self.path, f"the checkpoint is truncated or not a checkpoint "
                                             f"({type(exc).__name__})") from None
        if not (isinstance(payload, dict) and isinstance(payload.get("state"), dict)
                and isinstance(payload.get("iteration"), int) and payload["iteration"] >= 0
                and isinstance(payload.get("seconds"), (int, float))):
            raise CorruptRunState(self.path, "the file is not an mddbench checkpoint (no state, iteration, seconds)")
        return payload

    def restore(self, state: dict[str, Any], device: torch.device) -> dict[str, Any]:
        payload = self.read()
        try:
            for key, saved in payload["state"].items():
                if key not in state:
                    continue
                live = state[key]
                if isinstance(live, torch.Tensor) and isinstance(saved, torch.Tensor):
                    if live.shape != saved.shape:
                        raise ValueError(f"{key} has shape {tuple(saved.shape)}, this run's {tuple(live.shape)}")
                    with torch.no_grad():
                        live.copy_(saved)
                elif isinstance(live, torch.Generator):
                    live.set_state(saved)
                elif hasattr(live, "load_state_dict"):
                    live.load_state_dict(_to_device(saved, device))
                else:
                    state[key] = _to_device(saved, device)
        except Exception as exc:  # a checkpoint of another layout (e.g. an older mddbench)
            raise CorruptRunState(self.path, f"the checkpoint does not fit this run ({type(exc).__name__}: {exc})",
                                  partial=True) from exc
        return {k: v for k, v in payload.items() if k != "state"}


def _dump(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().clone()
    if isinstance(v, torch.Generator):
        return v.get_state()
    if hasattr(v, "state_dict"):
        return v.state_dict()
    if isinstance(v, (list, tuple)):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {k: _dump(x) for k, x in v.items()}
    return v


def _to_device(v: Any, device: torch.device) -> Any:
    if isinstance(v, torch.Tensor):
        return v.to(device)
    if isinstance(v, list):
        return [_to_device(x, device) for x in v]
    if isinstance(v, dict):
        return {k: _to_device(x, device) for k, x in v.items()}
    return v


# ------------------------------------------------------------------------------------------ log
class MetricsLog:
    """Append-only JSON lines, flushed per line so a crash loses at most the line being written."""

    def __init__(self, path: Path | None, resume_from: int = 0):
        self.path = path
        if path is not None and path.exists() and resume_from is not None:
            keep = [line for line, row in _log_rows(path)
                    if isinstance(row.get("it"), int) and row["it"] < resume_from]
            write_text(path, "".join(line + "\n" for line in keep))

    def write(self, **row: Any) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    return v


def read_log(path: Path) -> list[dict]:
    return [row for _, row in _log_rows(Path(path))]


def _log_rows(path: Path) -> list[tuple[str, dict]]:
    """(line, row) of every readable line; lines that are not a JSON object are dropped with a warning.

    A crash (or a full disk) during a write leaves a half-written last line; the rows before it are kept.
    """
    rows, bad = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append((line, row))
        else:
            bad.append(n)
    if bad:
        _log.warning("mddbench: %s: dropped %d unreadable line(s) (line %s; a crash mid-write leaves a half-written "
                     "last line); the %d readable rows are read", path, len(bad), ", ".join(map(str, bad[:5])),
                     len(rows))
    return rows


# ----------------------------------------------------------------------------------------- loop
@dataclass
class LoopResult:
    iterations: int
    seconds: float
    stopped_by_time: bool = False
    peak_mb: float = 0.0  # the largest per-iteration peak (CUDA) or the process peak RSS (CPU)
    updates: int | None = None  # iterations that applied their update, for steps reporting ``stepped``


def _finite(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x).all())
    return x is None or math.isfinite(float(x))


def distill_loop(task, iterations: int, state: dict[str, Any], step: Callable[[int], dict[str, Any]],
                 current: Callable[[], SyntheticSet], name: str = "distill") -> LoopResult:
    """Run ``step(it)`` for ``it`` in ``[resume point, iterations)``; see the module docstring."""
    run_dir = task.run_dir
    state["__task_generator__"] = task.generator  # in place: restored counters must reach the method
    ckpt = Checkpoint(run_dir / f"{name}.ckpt") if run_dir is not None else None
    start, elapsed, updates = 0, 0.0, None
    if ckpt is not None and ckpt.exists():
        try:
            meta = ckpt.restore(state, task.device)
            start, elapsed, updates = meta["iteration"], meta["seconds"], meta.get("updates")
        except CorruptRunState as exc:
            if exc.partial:
                raise  # the live state is half-restored: the caller starts the method afresh (runner.distill)
            # Nothing was restored yet and the seeded run repeats itself: starting again loses only time.
            kept = set_aside(ckpt.path)
            _log.warning("mddbench: %s is truncated or not a checkpoint; kept as %s, %s starts again from iteration "
                        "0 (same seed, same result; only the time it had run is lost)", ckpt.path, kept.name, name)
    log = MetricsLog(run_dir / f"{name}_log.jsonl" if run_dir is not None else None, resume_from=start)
    snap_dir = run_dir / "snapshots" if run_dir is not None and task.snapshot_every else None

    def save(it: int) -> None:
        if ckpt is not None:
            ckpt.save(state, {"iteration": it, "seconds": elapsed, "updates": updates})

    last_good = current()
    stopped_by_time = False
    run_peak = 0.0
    it = start
    with tqdm(total=iterations, initial=start, desc=f"{name} {task.spec.name} ipc{task.ipc}",
              disable=not task.progress, unit="it", leave=False) as bar:
        for it in range(start, iterations):
            if task.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(task.device)  # so peak_mb is this iteration's
            t0 = time.perf_counter()
            metrics = step(it)
            if task.device.type == "cuda":
                torch.cuda.synchronize(task.device)
            elapsed += time.perf_counter() - t0
            peak = peak_memory_mb(task.device)
            run_peak = max(run_peak, peak)
            now = current()
            bad = [k for k, v in metrics.items() if not _finite(v)]
            if bad or not _finite(now.images) or not _finite(now.labels):
                where = ""
                if run_dir is not None:
                    where = f"; the last good synthetic set (iteration {it}) is in {last_good.save(run_dir / 'last_good.safetensors')}"
                raise DistillationDiverged(
                    f"{name} diverged at iteration {it}: {', '.join(bad) or 'synthetic set'} not finite{where}. "
                    + (STEP_SIZE_ADVICE if STEP_SIZE in bad else IMAGE_ADVICE))
            last_good = now
            if "stepped" in metrics:
                updates = (updates or 0) + int(metrics["stepped"])
            log.write(it=it, seconds=round(elapsed, 4), peak_mb=round(peak, 1), **metrics)
            bar.update(1)
            if "loss" in metrics:
                bar.set_postfix(loss=f"{float(metrics['loss']):.4g}")
            if snap_dir is not None and (it + 1) % task.snapshot_every == 0:
                now.meta.update(iteration=it + 1, seconds=elapsed)
                now.save(snap_dir / f"it{it + 1:06d}.safetensors")
            if ckpt is not None and (it + 1) % task.checkpoint_every == 0:
                save(it + 1)
            if task.time_budget is not None and elapsed >= task.time_budget:
                stopped_by_time = True
                break
    done = it + 1 if iterations > start else start
    save(done)
    result = LoopResult(done, elapsed, stopped_by_time, run_peak, updates)
    task.loops.append(result)
    return result
