import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests import methodkit
torch.set_num_threads(1)  # test tensors are tiny: a second thread costs more than it gives

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def expert_cache(tmp_path_factory):
    """One expert cache for the whole session: methods sharing a recipe share the trajectories."""
    return tmp_path_factory.mktemp("experts")
