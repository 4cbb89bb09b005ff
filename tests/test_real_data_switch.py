"""Real-data tests read the genuine files only through MDDBENCH_TEST_DATA, and a run says what it skipped (issue 46).

Each case runs pytest itself on the four class-count checks of tests/test_published.py (they read the
genuine .npz files and nothing else) with the variable unset, pointing at an empty folder, and at a file.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, TEST_DATA_ENV

CHECKS = "tests/test_published.py::test_class_counts_match_the_data"


def pytest_run(tmp_path, value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != TEST_DATA_ENV}
    if value is not None:
        env[TEST_DATA_ENV] = value
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CHECKS], cwd=REPO,
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)


def test_without_the_variable_the_end_of_the_run_says_what_was_skipped_and_how_to_run_it(tmp_path):
    done = pytest_run(tmp_path, None)
    assert done.returncode == 0, done.stdout[-2000:]
    last = done.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("4 real-data test(s) skipped: set MDDBENCH_TEST_DATA to the folder"), last
    assert "MDDBENCH_TEST_DATA=../shared/data python -m pytest" in last[0] and "4 skipped" in last[1]


@pytest.mark.slow
def test_a_folder_without_the_files_names_what_is_missing(tmp_path):
    done = pytest_run(tmp_path, str(tmp_path))
    assert done.returncode == 0 and f"4 real-data test(s) skipped: put the files they name into {tmp_path}" \
        in done.stdout, done.stdout[-2000:]


@pytest.mark.slow
def test_a_variable_that_names_no_folder_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("")
    done = pytest_run(tmp_path, str(tmp_path / "file"))
    assert done.returncode == 4 and f"{TEST_DATA_ENV}={tmp_path / 'file'} is not a folder" in done.stderr


@pytest.mark.slow
def test_a_relative_value_is_taken_from_the_repository_root(tmp_path):
    """.ci/run sets ../shared/data: the folder beside the clone, wherever pytest was started from."""
    from conftest import SHARED_DATA, TEST_DATA_SET

    if TEST_DATA_SET and not os.path.isabs(os.environ[TEST_DATA_ENV]):
        assert SHARED_DATA == REPO / os.environ[TEST_DATA_ENV]
    done = pytest_run(tmp_path, "../no-such-folder-beside-the-clone")
    assert done.returncode == 4 and str(REPO / "../no-such-folder-beside-the-clone") in done.stderr
