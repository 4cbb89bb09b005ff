"""Real 3D data: every method runs on a small slice of the genuine AdrenalMNIST3D file or refuses clearly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, needs_data
from methodkit import distill

from mddbench.data.dataset import SPLITS, DatasetSpec, RawArrays, load_dataset
from mddbench.errors import ConfigError
from mddbench.registry import DATASETS, METHODS

ADRENAL = SHARED_DATA / "adrenalmnist3d.npz"
pytestmark = needs_data(ADRENAL.name)
PER_CLASS = {"train": 2, "val": 1, "test": 1}


def _slice() -> RawArrays:
    """The first few volumes of each class of each split, exactly as stored (1x28^3 shape masks)."""
    with np.load(ADRENAL) as f:
        images, labels = {}, {}
        for s in SPLITS:
            y = f[f"{s}_labels"].reshape(-1)
            keep = np.concatenate([np.flatnonzero(y == c)[:PER_CLASS[s]] for c in (0, 1)])
            images[s], labels[s] = f[f"{s}_images"][keep], f[f"{s}_labels"][keep]
    return RawArrays(images, labels, "adrenal-slice")


@pytest.fixture(scope="module")
def adrenal_slice():
    """Registers ``adrenal-slice`` for this module's tests only: a test-made "medmnist" entry left in the
    registry would break test_data's check that the registered MedMNIST sets are exactly MedMNIST's."""
    arrays = _slice()
    spec = DatasetSpec(
        name="adrenal-slice", title="AdrenalMNIST3D (slice)", source="medmnist", dims=3, channels=1, size=28,
        label_names=("normal", "mass"), task="binary-class", license="CC BY 4.0", citation="MedMNIST v2",
        description="test slice", load=lambda spec, root, offline: arrays,
        n_samples={s: 2 * n for s, n in PER_CLASS.items()})
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(DATASETS._items, "adrenal-slice", spec)
        yield "adrenal-slice"


def test_the_genuine_file_loads_as_3d():
    data = load_dataset("adrenalmnist3d", SHARED_DATA)
    assert data.spec.shape == (1, 28, 28, 28) and data.n_classes == 2
    assert [len(data.y[s]) for s in SPLITS] == [1188, 98, 298]
    assert data.checksum == "bbd3c5a5576322bc4cdfea780653b1ce"


@pytest.mark.slow
@pytest.mark.parametrize("method", [n for n in METHODS.names() if not METHODS.get(n).selects_real])  # they optimise nothing
def test_every_method_runs_on_real_3d_or_refuses_clearly(method, tmp_path, expert_cache, adrenal_slice):
    m = METHODS.get(method)()
    hp = {k: v for k, v in {"iterations": 2}.items() if k in m.defaults}
    try:
        synset, task = distill(method, dataset=adrenal_slice, ipc=1, hp=hp, run_dir=tmp_path / "run",
                               expert_root=expert_cache)
    except ConfigError as exc:
        assert "3D" in str(exc), exc
        return
    assert synset.images.shape[1:] == (1, 28, 28, 28)
    assert torch.isfinite(synset.images).all()
    per_class = m.images_per_class(task)  # what the method declares (NCFM decodes each stored volume into 8)
    assert synset.hard_labels().bincount(minlength=2).tolist() == [per_class, per_class]
