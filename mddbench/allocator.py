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

Tensors above the raised threshold still came from mmap: at 112 px one activation of a 256-image batch
is 1.6 GB, so every step mapped and zero-filled fresh pages (a third of a 112 px run's CPU time was
kernel time). Micro-batches (:mod:`mddbench.memory`) keep every block of a step below 1 GiB, where the
raised thresholds reuse it: expert building at 112 px went from 41 % kernel time to 1 %. A ``heap``
setting (``M_MMAP_MAX`` 0 as well: nothing mapped at all) was measured beside it and gave nothing more
(``benchmarks/bench_memory.py --settings after heap``: the same wall time within noise, a 9 % higher
peak), so it is a knob for that benchmark, not the default.

The CLI calls :func:`configure_allocator` when it starts. A program that uses mddbench as a
library opts in with one call, ``mddbench.configure_allocator()``. ``MDDBENCH_ALLOCATOR`` picks the
setting: ``thresholds`` (default), ``heap`` or ``default`` (glibc's own); the benchmarks time them.
"""
from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed
TRIM_THRESHOLD = 1 << 30  # up to 1 GiB of free heap top is kept rather than given back
ENV = "MDDBENCH_ALLOCATOR"
SETTINGS = ("thresholds", "heap", "default")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's malloc.h
_GLIBC_ENV = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}
_HEAP_ENV = {"MALLOC_MMAP_MAX_": 0}
_state: dict[str, object] = {}


def setting() -> str:
    """The allocator setting this process asks for (``$MDDBENCH_ALLOCATOR``, default ``thresholds``)."""
    value = os.environ.get(ENV, "").strip().lower() or "thresholds"
    if value not in SETTINGS:
        from mddbench.errors import ConfigError

        raise ConfigError(f"${ENV} must be one of {', '.join(SETTINGS)}, got {value!r}")
    return value


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
    """Apply :func:`setting` here and, through glibc's ``MALLOC_*_`` variables, in child processes.

    Returns whether this process now runs with a tuned setting. Idempotent; does nothing off glibc
    or when ``MDDBENCH_ALLOCATOR=default``.
    """
    if "applied" in _state:
        return bool(_state["applied"])
    chosen = setting()
    applied = False
    libc = None if chosen == "default" else _glibc()
    if libc is not None:
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        applied = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                   and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
        if applied and chosen == "heap":
            applied = libc.mallopt(_M_MMAP_MAX, 0) == 1
        if applied:
            for name, value in {**_GLIBC_ENV, **(_HEAP_ENV if chosen == "heap" else {})}.items():
                os.environ.setdefault(name, str(value))
    _state["applied"] = applied
    _state["setting"] = chosen if applied else "default"
    return applied


def applied_setting() -> str:
    """What this process runs with: ``heap``, ``thresholds`` or ``default`` (recorded with every run)."""
    return str(_state.get("setting", "default"))
