"""The CPU memory allocator, configured once in every process that trains.

glibc's malloc gives a freed block above its mmap threshold (128 KiB at first, raised dynamically
to at most 32 MiB) back to the kernel, and trims the top of the heap above its trim threshold. A
training step allocates and frees the same activation buffers at every step, so on the CPU each
step page-faults its buffers in again: a quarter of expert building's CPU time was kernel time.
Raising both thresholds keeps freed blocks in the process for the next step. It changes where
memory comes from, never a number that is computed (``tests/test_allocator.py`` checks that).

Why mallopt and not jemalloc or tcmalloc: those need ``LD_PRELOAD`` before the interpreter starts
(a system package or a re-exec), PyTorch has no caching allocator for the CPU, and no wheel on
PyPI ships a maintained one. Two ``mallopt`` calls do it in-process, with no dependency; the
same values are exported as glibc's ``MALLOC_*_`` variables, so processes this one starts (sweep
workers, a local Ray cluster) are configured from their first allocation.

The CLI calls :func:`configure_allocator` when it starts. A program that uses mddbench as a
library opts in with one call, ``mddbench.configure_allocator()``. ``MDDBENCH_ALLOCATOR=default``
keeps glibc's own settings (``benchmarks/bench_allocator.py`` uses it to time both).
"""
from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed
TRIM_THRESHOLD = 1 << 30  # up to 1 GiB of free heap top is kept rather than given back
ENV = "MDDBENCH_ALLOCATOR"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_GLIBC_ENV = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}
_state: dict[str, bool] = {}


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it (musl's mallopt does nothing)
        return libc
    except (OSError, AttributeError):
        return None


def configure_allocator() -> bool:
    """Raise glibc malloc's mmap and trim thresholds here and in child processes.

    Returns whether this process now runs with the raised thresholds. Idempotent; does nothing
    off glibc or when ``MDDBENCH_ALLOCATOR=default``.
    """
    if "applied" in _state:
        return _state["applied"]
    applied = False
    libc = None if os.environ.get(ENV, "").strip().lower() == "default" else _glibc()
    if libc is not None:
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        applied = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                   and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
        if applied:
            for name, value in _GLIBC_ENV.items():
                os.environ.setdefault(name, str(value))
    _state["applied"] = applied
    return applied
