"""Dataset loading: genuine MedMNIST files, checksums, corrupt and missing files, downloads, specs, demo."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BREAST, BREAST_MD5, SHARED_DATA, needs_breast, skip_without_data
from medmnist import INFO

from mddbench.data.dataset import DatasetSpec, get_spec, load_dataset, md5sum, read_npz
from mddbench.datasets import demo
from mddbench.errors import ConfigError, DataError
from mddbench.registry import DATASETS

pytestmark = pytest.mark.usefixtures("isolated")  # no ambient data root, ~/.medmnist or network


def broken_copy(folder: Path, how: str) -> Path:
    """A copy of BreastMNIST with bytes flipped in the middle, or cut in half."""
    path = folder / "breastmnist.npz"
    folder.mkdir(parents=True, exist_ok=True)
    payload = bytearray(BREAST.read_bytes())
    if how == "flipped":
        middle = len(payload) // 2
        payload[middle:middle + 16] = bytes(b ^ 0xFF for b in payload[middle:middle + 16])
    else:
        payload = payload[:len(payload) // 2]
    path.write_bytes(bytes(payload))
    return path


# ------------------------------------------------------------------------------- BreastMNIST
def test_breastmnist_shapes_labels_checksum(breast):
    spec = get_spec("breastmnist")
    assert spec.md5 == INFO["breastmnist"]["MD5"] == BREAST_MD5
    assert breast.checksum == BREAST_MD5 and breast.path == str(BREAST)
    assert {s: tuple(breast.x[s].shape) for s in breast.x} == {
        "train": (546, 1, 28, 28), "val": (78, 1, 28, 28), "test": (156, 1, 28, 28)}
    assert all(breast.x[s].dtype == torch.float32 and breast.y[s].dtype == torch.int64 for s in breast.x)
    assert breast.class_counts() == [147, 399]
    with np.load(BREAST) as raw:  # the labels are the file's, split by split
        for s in ("train", "val", "test"):
            assert breast.y[s].tolist() == raw[f"{s}_labels"].reshape(-1).tolist()
    assert breast.describe()["n_samples"] == spec.n_samples


def test_normalisation_comes_from_the_train_split(breast):
    with np.load(BREAST) as raw:
        train = raw["train_images"].astype(np.float64) / 255
        test = raw["test_images"].astype(np.float64) / 255
    assert breast.mean[0] == pytest.approx(train.mean(), abs=1e-6)
    assert breast.std[0] == pytest.approx(train.std(ddof=1), abs=1e-6)
    x = breast.x["train"]
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-4
    expected_test = (test - breast.mean[0]) / breast.std[0]  # val/test use the train statistics
    np.testing.assert_allclose(breast.x["test"][:, 0].numpy(), expected_test, atol=1e-5)
    assert abs(float(breast.x["test"].mean())) > 1e-3  # and so are not themselves centred


def test_data_root_from_the_environment(monkeypatch):
    skip_without_data(BREAST.name)
    monkeypatch.setenv("MDDBENCH_DATA", str(SHARED_DATA))
    assert load_dataset("breastmnist", offline=True).checksum == BREAST_MD5


# ----------------------------------------------------------------------- corrupt and missing
@needs_breast
@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_corrupt_or_truncated_file_is_a_clear_error(tmp_path, how):
    path = broken_copy(tmp_path / "data", how)
    with pytest.raises(DataError) as info:
        load_dataset("breastmnist", path.parent, offline=True)
    message = str(info.value)
    assert str(path) in message and BREAST_MD5 in message and md5sum(path) in message
    assert "corrupt" in message and get_spec("breastmnist").url in message


@needs_breast
def test_corruption_after_a_good_load_is_still_caught(tmp_path, monkeypatch):
    """The MD5 cache is keyed by size, inode and mtime: an in-place change must not reuse the old digest,
    and nothing is written beside the data (data folders may be read-only and shared)."""
    import mddbench.data.dataset as data_mod

    monkeypatch.setattr(data_mod, "CACHE_ABOVE_BYTES", 0)  # cache even this small file
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "data" / "breastmnist.npz"
    path.parent.mkdir()
    shutil.copyfile(BREAST, path)
    assert load_dataset("breastmnist", path.parent, offline=True).checksum == BREAST_MD5
    assert sorted(p.name for p in path.parent.iterdir()) == ["breastmnist.npz"]
    assert len(list((tmp_path / "cache" / "mddbench" / "md5").iterdir())) == 1
    broken_copy(path.parent, "flipped")
    with pytest.raises(DataError, match=BREAST_MD5):
        load_dataset("breastmnist", path.parent, offline=True)


def test_read_npz_reports_broken_archives_by_name(tmp_path):
    arrays = {f"{s}_{k}": np.zeros((2, 4, 4) if k == "images" else (2, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    good = tmp_path / "good.npz"
    np.savez(good, **arrays)
    assert read_npz(good)[0]["train"].shape == (2, 4, 4)

    cases = {
        "truncated.npz": (lambda p: p.write_bytes(good.read_bytes()[:300]), "corrupt or truncated"),
        "nokey.npz": (lambda p: np.savez(p, **{k: v for k, v in arrays.items() if k != "val_labels"}),
                      "lacks the array(s) val_labels;"),
        "pickled.npz": (lambda p: np.savez(p, **{**arrays, "train_images": np.array([{"a": 1}, None])}),
                        "corrupt or truncated"),
        "mismatch.npz": (lambda p: np.savez(p, **{**arrays, "test_labels": np.zeros((3, 1), np.uint8)}),
                         "test has 2 images but 3 labels"),
    }
    for name, (make, expected) in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(DataError) as info:
            read_npz(path)
        assert str(path) in str(info.value) and expected in str(info.value), name
    with pytest.raises(DataError, match="train has 2 images, the dataset has 5"):
        read_npz(good, {"train": 5, "val": 2, "test": 2})


@pytest.mark.parametrize("switch", ["argument", "environment"])
def test_missing_file_offline_says_where_to_get_it(tmp_path, monkeypatch, switch):
    if switch == "environment":
        monkeypatch.setenv("MDDBENCH_OFFLINE", "1")
    root = tmp_path / "empty"
    with pytest.raises(DataError) as info:
        load_dataset("breastmnist", root, offline=True if switch == "argument" else None)
    message = str(info.value)
    spec = get_spec("breastmnist")
    for needed in ("breastmnist.npz", str(root), "--data-root", "MDDBENCH_DATA", spec.url, spec.md5, "offline"):
        assert needed in message
    assert not root.exists()  # nothing written


# ---------------------------------------------------------------------------------- download
class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def serve(monkeypatch, payload: bytes) -> list[str]:
    """Make urlopen serve ``payload``; returns the list of requested URLs."""
    requested: list[str] = []

    def urlopen(url, timeout=None):
        requested.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


@needs_breast
def test_download_verifies_and_then_reuses_the_file(tmp_path, monkeypatch):
    requested = serve(monkeypatch, BREAST.read_bytes())
    root = tmp_path / "root"
    data = load_dataset("breastmnist", root, offline=False)
    assert requested == [get_spec("breastmnist").url]
    assert data.checksum == BREAST_MD5 and md5sum(root / "breastmnist.npz") == BREAST_MD5
    assert data.class_counts() == [147, 399]
    assert sorted(p.name for p in root.iterdir()) == ["breastmnist.npz"]  # no .part left, nothing beside it
    load_dataset("breastmnist", root, offline=False)
    assert len(requested) == 1  # present now: not downloaded again


@needs_breast
def test_download_with_wrong_bytes_is_refused(tmp_path, monkeypatch):
    served = bytearray(BREAST.read_bytes())
    served[1000] ^= 0xFF
    requested = serve(monkeypatch, bytes(served))
    root = tmp_path / "root"
    with pytest.raises(DataError) as info:
        load_dataset("breastmnist", root, offline=False)
    message = str(info.value)
    assert requested and f"expected {BREAST_MD5}" in message and "breastmnist.npz" in message
    assert "--data-root" in message and get_spec("breastmnist").url in message
    assert list(root.iterdir()) == []  # neither the bad file nor a partial one is kept


def test_download_failure_says_where_to_get_the_file(tmp_path, monkeypatch):
    def unreachable(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(DataError) as info:
        load_dataset("pneumoniamnist", tmp_path, offline=False)
    message = str(info.value)
    spec = get_spec("pneumoniamnist")
    for needed in ("pneumoniamnist.npz", "no route to host", spec.url, spec.md5, "--data-root", "MDDBENCH_DATA"):
        assert needed in message
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- specs
def test_every_medmnist_flag_and_size_is_registered():
    expected = set()
    for flag, info in INFO.items():
        sizes = [28] + sorted(int(k.split("_")[1]) for k in info if k.startswith("MD5_"))
        assert sizes == ([28, 64] if flag.endswith("3d") else [28, 64, 128, 224]), flag
        for size in sizes:
            name = flag if size == 28 else f"{flag}_{size}"
            expected.add(name)
            spec = get_spec(name)
            suffix = "" if size == 28 else f"_{size}"
            assert (spec.source, spec.size, spec.dims) == ("medmnist", size, 3 if flag.endswith("3d") else 2)
            assert spec.channels == info["n_channels"]
            assert spec.n_classes == len(info["label"])
            assert spec.label_names == tuple(info["label"][str(i)] for i in range(len(info["label"])))
            assert spec.task == info["task"] and spec.n_samples == info["n_samples"]
            assert (spec.md5, spec.url) == (info[f"MD5{suffix}"], info[f"url{suffix}"])
            assert spec.filename == f"{name}.npz"
            assert spec.benchmark == (name in ("pathmnist", "octmnist", "organmnist3d"))
    registered = {n for n in DATASETS.names() if DATASETS.get(n).source == "medmnist"}
    assert registered == expected and len(expected) == 12 * 4 + 6 * 2
    assert get_spec("pathmnist").shape == (3, 28, 28) and get_spec("organmnist3d").shape == (1, 28, 28, 28)
    assert get_spec("breastmnist").label_names == ("malignant", "normal, benign")


def test_multi_label_datasets_are_refused_for_distillation():
    with pytest.raises(ConfigError, match="multi-label"):
        get_spec("chestmnist").check_distillable()
    get_spec("pathmnist").check_distillable()


# -------------------------------------------------------------------------------------- demo
def test_demo_is_deterministic_balanced_and_as_documented():
    first, second = demo.generate(), demo.generate()
    assert first.checksum == second.checksum
    assert all(np.array_equal(first.images[s], second.images[s]) for s in first.images)
    assert demo.generate(demo.SEED + 1).checksum != first.checksum

    data = load_dataset("demo")
    spec: DatasetSpec = data.spec
    assert data.checksum == first.checksum
    assert (spec.shape, spec.n_classes, spec.source) == ((1, 28, 28), 4, "generated")
    sizes = {"train": 600, "val": 100, "test": 200}  # 150 / 25 / 50 images per class
    assert spec.n_samples == sizes
    for split, n in sizes.items():
        assert tuple(data.x[split].shape) == (n, 1, 28, 28)
        assert torch.bincount(data.y[split], minlength=4).tolist() == [n // 4] * 4
    assert data.y["train"][:8].unique().numel() > 1  # shuffled, not class after class
    assert (data.x["train"].mean() ** 2).item() < 1e-8


@pytest.mark.slow
def test_medmnist_sets_load_when_medmnist_has_no_default_root(tmp_path):
    """medmnist's DEFAULT_ROOT is None when it cannot create ~/.medmnist (read-only home, or two processes
    importing it at once: a sweep's first jobs on a fresh machine). Every MedMNIST dataset vanished then."""
    code = ("import medmnist.info; medmnist.info.DEFAULT_ROOT = None\n"
            "from mddbench.data.dataset import get_spec\n"
            "from mddbench.datasets import medmnist_sets\n"
            "print(get_spec('retinamnist').n_classes, medmnist_sets.MEDMNIST_ROOT)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    n_classes, root = out.stdout.split()
    assert n_classes == "5" and root == str(Path("~/.medmnist").expanduser())
