"""The local executor: a sweep's works in worker processes on this machine, one device each.

With ``--jobs N`` each worker slot owns a device: on a machine with several CUDA devices the
slots take them round robin (``cuda:0``, ``cuda:1``, ...), and every work runs with cores/N
threads, or with ``OMP_NUM_THREADS`` when it is set (:func:`worker_threads`). Worker processes die
with the sweep that started them (``PR_SET_PDEATHSIG`` on Linux, and a thread watching the parent
everywhere), so a killed sweep leaves nothing running.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

import torch

from mddbench.errors import raise_terminated
from mddbench.scaleout.work import ExpertBuild, Result, Work, execute, usable_cores

PR_SET_PDEATHSIG = 1


def slot_devices(device: str, slots: int, n_cuda: int) -> list[str]:
    """The device of each worker slot: ``auto`` and ``cuda`` go round robin over the visible CUDA devices;
    ``cpu`` and an explicit ``cuda:N`` are every slot's. Without CUDA, ``cuda`` stays as asked (and fails
    with its clear error when a job resolves it)."""
    if device in ("auto", "cuda") and n_cuda > 0:
        return [f"cuda:{i % n_cuda}" for i in range(slots)]
    return ["cpu" if device == "auto" else device] * slots


def worker_threads(slots: int) -> int:
    """Threads each local work runs with: ``OMP_NUM_THREADS`` when the user set it (as ``mddbench run`` and
    torch itself honour it), else this process's cores shared among the slots. Two sweeps side by side,
    each told one thread, must not take all cores each: oversubscribed OpenMP threads spin-wait on each
    other (on 2 cores, two such sweeps and a third process turned 1-s PTM iterations into 20-s ones)."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, usable_cores() // max(1, slots))


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this process as soon as ``parent`` (the sweep) is gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the watcher below still ends it within a second
        pass
    if os.getppid() != parent:  # the sweep died before prctl took effect
        os._exit(1)
    # SIGTERM stops a worker's job as Ctrl-C does: it is how the sweep's interrupt() reaches its workers, and
    # what `timeout` and a scheduler send to the whole process group. (SIGINT would not do for interrupt(): a
    # sweep started in the background, `cmd &` in a script, begins with SIGINT ignored, and so do its workers.)
    signal.signal(signal.SIGTERM, raise_terminated)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


class LocalExecutor:
    """``slots`` works at once: in this process when 1, else in that many spawned worker processes."""

    def __init__(self, slots: int = 1, device: str = "auto", threads: int | None = None):
        self.slots = max(1, slots)
        n_cuda = torch.cuda.device_count() if device in ("auto", "cuda") else 0
        self.free = deque(slot_devices(device, self.slots, n_cuda))
        self.threads = threads or worker_threads(self.slots)
        self.device_of: dict[Future, str] = {}
        self.pool = None
        if self.slots > 1:
            self.pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=get_context("spawn"),
                                            initializer=die_with_parent, initargs=(os.getpid(),))

    def provide(self, key: str, build: ExpertBuild) -> None:
        """Cached experts are already where every local worker reads them."""

    def submit(self, work: Work) -> Future:
        device = self.free.popleft()
        if self.pool is None:
            future: Future = Future()
            future.set_result(execute(work, device, self.threads))
        else:
            try:
                future = self.pool.submit(execute, work, device, self.threads)
            except BrokenProcessPool as exc:  # a worker died earlier and took the pool with it
                future = Future()
                future.set_result(Result(work.key, False, f"the worker pool broke ({exc}); rerun the same sweep"))
        self.device_of[future] = device
        return future

    def collect(self, future: Future, work: Work) -> Result:
        self.free.append(self.device_of.pop(future))
        try:
            return future.result()
        except Exception as exc:  # the worker process itself died (killed, out of memory)
            return Result(work.key, False, f"its worker process died ({exc!r}); rerun the same sweep to retry it")

    def interrupt(self) -> None:
        """Pass the sweep's interrupt on to its workers. Ctrl-C reaches the whole process group, but a signal
        sent to the sweep alone (``kill``, ``kill -INT``) does not, and close() would wait for every running
        job to finish; sent SIGTERM, each worker stops its job where Ctrl-C would."""
        if self.pool is None:
            return
        workers = getattr(self.pool, "_processes", None) or {}  # CPython's pid -> Process of the pool
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:  # ended meanwhile
                pass

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
