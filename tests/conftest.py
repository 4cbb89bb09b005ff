"""Fixtures and paths every test file shares: defined once here, imported (paths) or requested (fixtures).

The genuine dataset files (breastmnist.npz, retinamnist.npz, adrenalmnist3d.npz, ham10000_sample/, ...) are
never copied into the repository: ``MDDBENCH_TEST_DATA`` names the folder holding them (a relative path is
taken from the repository's root; ``.ci/run`` sets ``../shared/data``). Test modules use
``from conftest import SHARED_DATA`` for paths and ``needs_data`` / ``skip_without_data`` to skip without
them; every such skip's reason starts with :data:`REAL_DATA_SKIP`, and the end of the run says how many
real-data tests were skipped and how to run them (:func:`pytest_terminal_summary`). Without the variable
no test reads a file beside the clone.
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

REPO = Path(__file__).resolve().parents[1]
TEST_DATA_ENV = "MDDBENCH_TEST_DATA"
TEST_DATA_SET = bool(os.environ.get(TEST_DATA_ENV))
# the folder of genuine data files; unset, a path that holds nothing (every real-data test skips)
SHARED_DATA = REPO / Path(os.environ.get(TEST_DATA_ENV) or f"<{TEST_DATA_ENV} is not set>").expanduser()
REAL_DATA_SKIP = "real data:"  # the start of every real-data skip reason (counted at the end of the run)


def missing_data(*names: str) -> str | None:
    """Why the real-data files ``names`` (under SHARED_DATA) cannot be read: a skip reason, None when all are there."""
    if not TEST_DATA_SET:
        return f"{REAL_DATA_SKIP} {TEST_DATA_ENV} is not set ({', '.join(names)})"
    missing = [n for n in names if not (SHARED_DATA / n).exists()]
    return f"{REAL_DATA_SKIP} {', '.join(missing)} not in {SHARED_DATA} ({TEST_DATA_ENV})" if missing else None


def needs_data(*names: str) -> pytest.MarkDecorator:
    """Skip mark of a test that reads the real-data files ``names`` (under SHARED_DATA)."""
    reason = missing_data(*names)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def skip_without_data(*names: str) -> None:
    """Skip the running test unless the real-data files ``names`` are there."""
    reason = missing_data(*names)
    if reason is not None:
        pytest.skip(reason)


BREAST = SHARED_DATA / "breastmnist.npz"
BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"
needs_breast = needs_data(BREAST.name)


def pytest_configure(config) -> None:
    if TEST_DATA_SET and not SHARED_DATA.is_dir():
        raise pytest.UsageError(f"{TEST_DATA_ENV}={os.environ[TEST_DATA_ENV]} is not a folder ({SHARED_DATA}); "
                                f"name the folder holding the genuine data files, or unset it")


# The files whose tests take longest (pytest --durations, on 2 cores): collected first, so that with
# `-n auto --dist worksteal` (setup.cfg) no worker starts one of them while the others run out of work.
# An order hint only: a file missing from the list runs after these, in its usual order.
LONGEST_FIRST = ("test_gpu_script.py", "test_evidence_script.py", "test_readme.py", "test_allocator.py",
                 "test_methods_common.py", "test_ray.py", "test_provenance.py", "test_adrenal3d.py",
                 "test_seqmatch_haba.py", "test_scaleout.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort: files keep their order


def pytest_terminal_summary(terminalreporter) -> None:
    """Say how many real-data tests were skipped, and how to run them: a fresh clone skips them all."""
    reasons = [r.longrepr[2] for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and REAL_DATA_SKIP in str(r.longrepr[2])]
    if not reasons:
        return
    how = (f"set {TEST_DATA_ENV} to the folder holding the genuine data files "
           f"(e.g. {TEST_DATA_ENV}=../shared/data python -m pytest, relative to the repository; .ci/run sets it)"
           if not TEST_DATA_SET else f"put the files they name into {SHARED_DATA}")
    terminalreporter.write_line(f"{len(reasons)} real-data test(s) skipped: {how}", yellow=True)


@pytest.fixture(scope="session")
def expert_cache(tmp_path_factory):
    """One expert cache for the whole session: methods sharing a recipe share the trajectories."""
    return tmp_path_factory.mktemp("experts")


@pytest.fixture(scope="module")
def breast():
    """The genuine BreastMNIST file from SHARED_DATA, loaded once per test module (skips when absent)."""
    skip_without_data(BREAST.name)
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
