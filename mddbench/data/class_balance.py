"""Test-split class counts of the datasets our records cover, for leaderboards that render without data.

Where one class holds more than half of the test split, accuracy rewards predicting it: a leaderboard
shows balanced accuracy beside accuracy for such a dataset. The counts are the MedMNIST v2 test
labels (tests check them against the files in $MDDBENCH_TEST_DATA when set); a dataset not listed
here gets no balanced-accuracy column beside its accuracy (its balanced-accuracy table still exists).
"""
from __future__ import annotations

import numpy as np

TEST_CLASS_COUNTS: dict[str, tuple[int, ...]] = {
    "breastmnist": (42, 114),
    "pneumoniamnist": (234, 390),
    "retinamnist": (174, 46, 92, 68, 20),
    "adrenalmnist3d": (229, 69),
}


def majority_share(dataset: str) -> float | None:
    """The share of the test split's largest class (None when the counts are not listed)."""
    counts = TEST_CLASS_COUNTS.get(dataset)
    return max(counts) / sum(counts) if counts else None


def majority_dominated(dataset: str) -> bool:
    """True when the test split's majority class exceeds half of it."""
    share = majority_share(dataset)
    return share is not None and share > 0.5


def counts_of_test_split(dataset: str, root: str | None = None) -> tuple[int, ...] | None:
    """The test split's class counts: listed above, else read from the dataset's own labels where it loads
    offline from ``root`` (the demo set, a cached file); None when neither says."""
    from mddbench.data.dataset import data_root, get_spec
    from mddbench.errors import MddError

    if dataset in TEST_CLASS_COUNTS:
        return TEST_CLASS_COUNTS[dataset]
    try:
        spec = get_spec(dataset)
        labels = np.asarray(spec.load(spec, data_root(root), True).labels["test"]).reshape(-1).astype(np.int64)
    except (MddError, OSError, ValueError):
        return None
    return tuple(np.bincount(labels, minlength=spec.n_classes).tolist()) if labels.size else None
