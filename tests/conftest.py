"""Fixtures and paths every test file shares: defined once here, imported (paths) or requested (fixtures).

The real dataset files live beside the repository, in ``../shared/data`` (never copied into it);
test modules use ``from conftest import SHARED_DATA`` for module-level paths and skip marks.
"""
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests import methodkit
torch.set_num_threads(1)  # test tensors are tiny: a second thread costs more than it gives

import pytest  # noqa: E402

from mddbench.data.dataset import load_dataset  # noqa: E402
from mddbench.datasets import medmnist_sets  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BREAST = SHARED_DATA / "breastmnist.npz"
BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"
needs_breast = pytest.mark.skipif(not BREAST.is_file(), reason=f"{BREAST} is not available")


@pytest.fixture(scope="session")
def expert_cache(tmp_path_factory):
    """One expert cache for the whole session: methods sharing a recipe share the trajectories."""
    return tmp_path_factory.mktemp("experts")


@pytest.fixture(scope="module")
def breast():
    """The genuine BreastMNIST file from SHARED_DATA, loaded once per test module (skips when absent)."""
    if not BREAST.is_file():
        pytest.skip(f"{BREAST} is not available")
    return load_dataset("breastmnist", SHARED_DATA, offline=True)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No data root or offline switch from the environment, no ~/.medmnist, and no network."""
    monkeypatch.delenv("MDDBENCH_DATA", raising=False)
    monkeypatch.delenv("MDDBENCH_OFFLINE", raising=False)
    monkeypatch.setattr(medmnist_sets, "MEDMNIST_ROOT", tmp_path / "no-medmnist-root")

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run the command line in-process: (exit code, stdout, stderr)."""
    from mddbench.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


RANDOM_DEMO = ["run", "--method", "random", "--dataset", "demo", "--ipc", "2", "--budget", "smoke", "--quiet"]


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """One finished `run` of the random baseline on the demo set (one per test module that reads it)."""
    from mddbench.cli import main

    out = tmp_path_factory.mktemp("out")
    assert main(RANDOM_DEMO + ["--out", str(out)]) == 0
    return out


def run_script(script: Path, *args, timeout: float = 1200, **env) -> subprocess.CompletedProcess:
    """Run one of the repository's bash scripts as a user would, with this interpreter's ``mddbench`` and
    ``python`` first on PATH, one thread per process, and ``env`` (the script's knobs) added."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env, "PATH": path})
