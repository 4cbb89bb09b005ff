"""One safe way to write every file mddbench owns: into a temporary file beside it, then renamed over it.

A reader (or a process killed mid-write) therefore sees the old file or the new one, never half of
one. The temporary name is hidden and unique per process, so concurrent writers never share one,
and globs for the real files (``expert_*.safetensors``, ``it*.safetensors``) never match it. The file
gets the mode ``open`` gives a new file (0644 under the usual umask 022), whatever wrote the temporary
file: safetensors' ``save_file`` creates it 0600, which left saved sets and experts unreadable by the group.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from mddbench.errors import ConfigError


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over it if the block succeeds and removed otherwise.

    The block writes the temporary file by any means (``torch.save``, ``save_file``, ``np.savez``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        if tmp.exists():
            os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def new_file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 less the process's umask (Linux says it in /proc, which avoids
    setting the umask to read it, a race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of :func:`replacing`'s temporary files (a write in progress, or left by a crash)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", newline: str | None = None) -> Path:
    path = Path(path)
    with replacing(path) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as f:
            f.write(text)
    return path


def write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    return write_text(path, json.dumps(obj, **dumps))


def set_aside(path: str | os.PathLike, why: str = "corrupt") -> Path:
    """Rename a broken file to ``NAME.corrupt`` (numbered when taken) so it is kept, not used; return the new path."""
    path = Path(path)
    target = path.with_name(f"{path.name}.{why}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{why}{n}")
    os.replace(path, target)
    return target


def _fsync(path: Path) -> None:
    """Flush the file to disk before the rename, so a power cut cannot leave a renamed but empty file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def locked(path: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block: concurrent processes take turns.
    ``on_wait`` is called once when another process holds it (to say what this one waits for)."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_writable(folder: str | os.PathLike, option: str = "--out") -> None:
    """Make ``folder`` and prove it writable, before any work whose result would go there; ``option`` names
    the command-line option that chose it in the refusal."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a probe of its own: runs that share an --out (a sweep's workers, two shells) must not
        # unlink each other's probe
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to {folder} ({exc.strerror or exc}); choose another {option}") from exc


def ensure_writable_file(path: str | os.PathLike, option: str) -> None:
    """The same proof for a file to be written at ``path`` (it may exist; a folder there is refused)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; name a file")
    ensure_writable(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write to {path} (permission denied); choose another {option}")
