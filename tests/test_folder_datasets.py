"""The folder datasets (covid19-cxr, skin-ham, breast-uls) on tiny generated archives."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, needs_data
from PIL import Image

from mddbench.data.dataset import SPLITS, get_spec, load_dataset, md5sum
from mddbench.datasets import mdd_folders as mf
from mddbench.errors import DataError
from mddbench.registry import DATASETS

MASK = 255  # pixel value only masks have
SIZES = [(40, 52), (60, 44), (48, 48), (57, 41), (43, 60), (51, 55)]


def _save(path, value, size, mode="L", **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path, **kw)


def _grey(label):  # distinct mean intensity per class
    return 30 + 50 * label


def _load(name, root):
    spec = get_spec(name)
    return spec, spec.load(spec, root, False)


def _all(raw):
    return (np.concatenate([raw.images[s] for s in SPLITS]),
            np.concatenate([raw.labels[s].reshape(-1) for s in SPLITS]))


def _check_grey_content(images, labels):
    """Every image is 3 equal channels of its class's grey value (so labels line up and no mask got in)."""
    assert images.dtype == np.uint8 and images.shape[1:] == (112, 112, 3)
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 0] == images[..., 2]).all()
    assert (images != MASK).all()
    for img, y in zip(images, labels):
        assert abs(float(img.mean()) - _grey(int(y))) < 1.5


# ------------------------------------------------------------------------------------------ archives
def make_covid(root, flat=False, per_class=4):
    top = root / "COVID-19_Radiography_Dataset"
    for c, cls in enumerate(mf.COVID_CLASSES):
        for i in range(per_class):
            where = top / cls if flat else top / cls / "images"
            _save(where / f"{cls}-{i + 1}.png", _grey(c), SIZES[(i + c) % len(SIZES)])
            _save(top / cls / "masks" / f"{cls}-{i + 1}.png", MASK, (50, 50))
    return len(mf.COVID_CLASSES) * per_class


def make_busi(root, per_class=(5, 4, 3)):
    top = root / "Dataset_BUSI_with_GT"
    for c, (cls, n) in enumerate(zip(mf.BUSI_CLASSES, per_class)):
        for i in range(n):
            mode = "RGB" if i % 2 else "L"
            value = (_grey(c),) * 3 if mode == "RGB" else _grey(c)
            _save(top / cls / f"{cls} ({i + 1}).png", value, SIZES[i % len(SIZES)], mode)
            _save(top / cls / f"{cls} ({i + 1})_mask.png", MASK, (45, 45))
            if i == 0:
                _save(top / cls / f"{cls} ({i + 1})_mask_1.png", MASK, (45, 45))
                _save(top / cls / f"{cls} ({i + 1})_mask_2.png", MASK, (45, 45))
    return sum(per_class)


def ham_colour(i, label):
    return (10 * (i % 25) + 5, 10 * (i // 25) + 5, 30 * label + 5)


def make_ham(root, lesions_per_class=5, dataverse_tab=False):
    """HAM10000 layout with 1-3 images per lesion; image i has the unique colour ham_colour(i, label).

    ``dataverse_tab``: the metadata as Harvard Dataverse serves it by default, HAM10000_metadata.tab
    (tab-separated, strings quoted), instead of the original csv."""
    top = root / "HAM10000"
    rows, i = ["lesion_id,image_id,dx,dx_type,age,sex,localization"], 0
    for c, dx in enumerate(mf.HAM_CLASSES):
        for k in range(lesions_per_class):
            lesion = f"HAM_{c:03d}{k:04d}"
            for _ in range(1 + (c + k) % 3):
                image_id = f"ISIC_{i:07d}"
                part = top / f"HAM10000_images_part_{1 + i % 2}"
                _save(part / f"{image_id}.jpg", ham_colour(i, c), SIZES[i % len(SIZES)], "RGB",
                      quality=100, subsampling=0)
                rows.append(f"{lesion},{image_id},{dx},histo,50.0,male,back")
                i += 1
    # Kaggle's mirror ships part 1 twice under a lower-case name: must not double the images
    dup = top / "ham10000_images_part_1"
    dup.mkdir()
    for p in (top / "HAM10000_images_part_1").iterdir():
        (dup / p.name).write_bytes(p.read_bytes())
    if dataverse_tab:
        quoted = ["\t".join(f'"{v}"' if not v.replace(".", "").isdigit() else v for v in r.split(",")) for r in rows]
        (top / "HAM10000_metadata.tab").write_text("\n".join(quoted) + "\n")
    else:
        (top / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    return rows[1:]


def test_decode_is_pil_bicubic_rgb(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k, (mode, size) in enumerate((("L", (47, 58)), ("RGB", (300, 190)), ("RGBA", (90, 130)))):
        pixels = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8).squeeze()
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(pixels, mode).save(paths[-1])
    out = mf._decode(paths, "test")
    assert out.shape == (3, 112, 112, 3) and out.dtype == np.uint8
    for p, got in zip(paths, out):
        want = np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.Resampling.BICUBIC))
        assert np.array_equal(got, want)
    assert (out[0, ..., 0] == out[0, ..., 2]).all()


# ------------------------------------------------------------------------------------ registration
def test_registered_specs():
    assert not DATASETS.failures
    for name, n_classes in (("covid19-cxr", 4), ("skin-ham", 7), ("breast-uls", 3)):
        spec = get_spec(name)
        assert (spec.source, spec.dims, spec.channels, spec.size, spec.task) == ("folder", 2, 3, 112, "multi-class")
        assert spec.benchmark and spec.n_samples is None and spec.n_classes == n_classes
        assert spec.filename == f"{name}_112.npz" and spec.where and spec.url and spec.citation
    assert get_spec("skin-ham").label_names[0].startswith("akiec (")


# ------------------------------------------------------------------------------------------- splits
def _check_partition(split, n):
    idx = np.concatenate([split[s] for s in SPLITS])
    assert sorted(idx.tolist()) == list(range(n))  # disjoint and complete


def test_stratified_split_proportions_and_determinism():
    sizes = [1000, 351, 57, 10]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    np.random.default_rng(5).shuffle(labels)
    split = mf.stratified_split(labels)
    _check_partition(split, len(labels))
    for c, n in enumerate(sizes):
        for s, frac in zip(SPLITS, (0.7, 0.1, 0.2)):
            assert abs(int((labels[split[s]] == c).sum()) - frac * n) <= 1, (c, s)
    again = mf.stratified_split(labels, seed=0)
    assert all(np.array_equal(split[s], again[s]) for s in SPLITS)
    other = mf.stratified_split(labels, seed=1)
    assert not all(np.array_equal(split[s], other[s]) for s in SPLITS)
    with pytest.raises(ValueError):
        mf.stratified_split(labels, fractions=(0.5, 0.1, 0.1))


def test_stratified_split_groups():
    rng = np.random.default_rng(3)
    group_sizes = rng.integers(1, 5, 600)
    group_labels = rng.integers(0, 3, 600)
    groups = np.repeat([f"lesion{g}" for g in range(600)], group_sizes)
    labels = np.repeat(group_labels, group_sizes)
    order = rng.permutation(len(labels))
    groups, labels = groups[order], labels[order]
    split = mf.stratified_split(labels, groups=groups, seed=7)
    _check_partition(split, len(labels))
    seen = [set(groups[split[s]]) for s in SPLITS]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    for c in range(3):
        n = int((labels == c).sum())
        for s, frac in zip(SPLITS, (0.7, 0.1, 0.2)):
            assert abs(int((labels[split[s]] == c).sum()) - frac * n) <= 4  # one group at most
    again = mf.stratified_split(labels, groups=groups, seed=7)
    assert all(np.array_equal(split[s], again[s]) for s in SPLITS)


# ----------------------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("flat", [False, True])
def test_covid_layouts_exclude_masks(tmp_path, flat):
    n = make_covid(tmp_path, flat=flat, per_class=5)
    _, raw = _load("covid19-cxr", tmp_path)
    images, labels = _all(raw)
    assert len(images) == n
    assert np.bincount(labels, minlength=4).tolist() == [5, 5, 5, 5]
    assert [len(raw.labels[s]) for s in SPLITS] == [4 * 3, 4 * 1, 4 * 1]  # 5 per class -> 3 / 1 / 1
    _check_grey_content(images, labels)


def test_covid_class_folders_at_root(tmp_path):
    make_covid(tmp_path)
    top = tmp_path / "COVID-19_Radiography_Dataset"
    _, raw = _load("covid19-cxr", top)  # the data root is the archive's top folder itself
    assert sum(len(raw.labels[s]) for s in SPLITS) == 16
    assert (top / "covid19-cxr_112.npz").is_file()


def test_ham_group_aware(tmp_path):
    rows = make_ham(tmp_path)
    spec, raw = _load("skin-ham", tmp_path)
    lesion_of = {}
    colours = np.array([ham_colour(i, mf.HAM_CLASSES.index(r.split(",")[2])) for i, r in enumerate(rows)])
    where = {}
    for s in SPLITS:
        assert raw.images[s].shape[1:] == (112, 112, 3)
        for img, y in zip(raw.images[s], raw.labels[s].reshape(-1)):
            mean = img.reshape(-1, 3).mean(0)
            i = int(np.abs(colours - mean).sum(1).argmin())
            assert np.abs(colours[i] - mean).max() < 3
            lesion, image_id, dx = rows[i].split(",")[:3]
            assert mf.HAM_CLASSES[int(y)] == dx
            assert image_id not in where  # each image exactly once
            where[image_id] = s
            lesion_of.setdefault(lesion, set()).add(s)
    assert len(where) == len(rows)  # no duplicates from the second copy of part 1, none missing
    assert all(len(splits) == 1 for splits in lesion_of.values())
    meta = json.loads((tmp_path / "skin-ham_112.json").read_text())
    assert meta["split_seed"] == mf.SPLIT_SEED == 0
    assert sum(sum(meta["counts"][s].values()) for s in SPLITS) == len(rows)


def test_ham_reads_dataverses_tab_metadata_like_the_csv(tmp_path):
    make_ham(tmp_path / "csv")
    make_ham(tmp_path / "tab", dataverse_tab=True)
    assert (tmp_path / "tab" / "HAM10000" / "HAM10000_metadata.tab").read_text().startswith('"lesion_id"\t"image_id"')
    (_, from_csv), (_, from_tab) = _load("skin-ham", tmp_path / "csv"), _load("skin-ham", tmp_path / "tab")
    for s in SPLITS:
        assert np.array_equal(from_csv.labels[s], from_tab.labels[s])
        assert np.array_equal(from_csv.images[s], from_tab.images[s])


def test_busi_end_to_end_and_cache(tmp_path, monkeypatch):
    n = make_busi(tmp_path)
    data = load_dataset("breast-uls", root=tmp_path)
    assert sum(len(data.y[s]) for s in SPLITS) == n
    assert data.x["train"].shape[1:] == (3, 112, 112) and data.x["train"].dtype == torch.float32
    train = data.x["train"]
    assert torch.allclose(train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    npz, sidecar = tmp_path / "breast-uls_112.npz", tmp_path / "breast-uls_112.json"
    meta = json.loads(sidecar.read_text())
    assert data.checksum == meta["md5"] == md5sum(npz) and data.path == str(npz)
    assert meta["format_version"] == mf.FORMAT_VERSION
    assert meta["source"] == str(tmp_path / "Dataset_BUSI_with_GT")
    assert meta["counts"]["train"] == {"benign": 3, "malignant": 3, "normal": 2}
    assert not list(tmp_path.glob(".*.tmp"))
    with np.load(npz) as f:
        assert f["train_labels"].dtype == np.uint8 and f["train_labels"].ndim == 2
    _, first = _load("breast-uls", tmp_path)
    _check_grey_content(*_all(first))

    def no_decoding(*a, **k):
        raise AssertionError("the cache should be read without decoding images")

    monkeypatch.setattr(Image, "open", no_decoding)
    _, second = _load("breast-uls", tmp_path)
    assert second.checksum == first.checksum
    for s in SPLITS:
        assert np.array_equal(second.images[s], first.images[s])
        assert np.array_equal(second.labels[s], first.labels[s])


def test_build_returns_what_the_cache_holds(tmp_path):
    make_busi(tmp_path)
    _, built = _load("breast-uls", tmp_path)
    _, cached = _load("breast-uls", tmp_path)
    assert built.checksum == cached.checksum
    for s in SPLITS:
        assert np.array_equal(built.images[s], cached.images[s])
        assert built.labels[s].shape == cached.labels[s].shape and built.labels[s].dtype == cached.labels[s].dtype


def test_corrupt_cache(tmp_path):
    make_busi(tmp_path)
    _load("breast-uls", tmp_path)
    npz = tmp_path / "breast-uls_112.npz"
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt: its MD5") as info:  # caught before numpy reads it
        _load("breast-uls", tmp_path)
    assert "delete" in str(info.value)
    (tmp_path / "breast-uls_112.json").unlink()
    with pytest.raises(DataError, match="sidecar"):
        _load("breast-uls", tmp_path)


@pytest.mark.parametrize("name", ["covid19-cxr", "skin-ham", "breast-uls"])
def test_missing_folder(tmp_path, name):
    (tmp_path / "unrelated").mkdir()
    with pytest.raises(DataError) as info:
        _load(name, tmp_path)
    msg = str(info.value)
    assert name in msg and "--data-root" in msg and "MDDBENCH_DATA" in msg
    assert str(tmp_path) in msg and get_spec(name).url in msg


def test_unreadable_image_and_empty_class(tmp_path):
    make_busi(tmp_path)
    bad = tmp_path / "Dataset_BUSI_with_GT" / "malignant" / "malignant (9).png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"malignant \(9\)\.png"):
        _load("breast-uls", tmp_path)
    assert not (tmp_path / "breast-uls_112.npz").exists()
    bad.unlink()
    for p in (tmp_path / "Dataset_BUSI_with_GT" / "normal").iterdir():
        if "_mask" not in p.name:
            p.unlink()
    with pytest.raises(DataError, match="normal"):
        _load("breast-uls", tmp_path)


def test_ham_missing_image(tmp_path):
    rows = make_ham(tmp_path, lesions_per_class=1)
    image_id = rows[-1].split(",")[1]
    for p in (tmp_path / "HAM10000").rglob(f"{image_id}.jpg"):
        p.unlink()
    with pytest.raises(DataError, match=image_id):
        _load("skin-ham", tmp_path)


# ------------------------------------------------------------------ the genuine HAM10000 sample
HAM_SAMPLE = SHARED_DATA / "ham10000_sample"
needs_ham = needs_data(HAM_SAMPLE.name)


@needs_ham
def test_the_genuine_partial_ham_download_says_what_is_missing(tmp_path):
    with pytest.raises(DataError, match=r"lists 99\d\d of its 10015 images.*partial download"):
        _load("skin-ham", HAM_SAMPLE)


@needs_ham
@pytest.mark.slow
def test_genuine_ham_files_filtered_to_those_present(tmp_path):
    """113 genuine JPEGs, 7 classes, one lesion with two images: labels, the lesion-grouped split, the cache."""
    import csv

    folder = tmp_path / "HAM10000"
    (folder / "HAM10000_images_part_1").mkdir(parents=True)
    present = {p.stem: p for p in (HAM_SAMPLE / "HAM10000_images_part_1").glob("*.jpg")}
    with open(HAM_SAMPLE / "HAM10000_metadata.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["image_id"] in present]
        fields = reader.fieldnames
    with open(folder / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    for image_id, path in present.items():
        (folder / "HAM10000_images_part_1" / path.name).symlink_to(path)
    assert len(rows) == len(present) == 113

    spec, raw = _load("skin-ham", tmp_path)
    dx_of = {r["image_id"]: r["dx"] for r in rows}
    lesion_of = {r["image_id"]: r["lesion_id"] for r in rows}
    counts = {s: len(raw.labels[s]) for s in SPLITS}
    assert sum(counts.values()) == 113 and all(counts[s] > 0 for s in SPLITS)
    assert all(raw.images[s].shape[1:] == (112, 112, 3) and raw.images[s].dtype == np.uint8 for s in SPLITS)
    labels = np.concatenate([raw.labels[s].reshape(-1) for s in SPLITS])
    assert sorted(np.bincount(labels, minlength=7).tolist()) == sorted(
        np.bincount([mf.HAM_CLASSES.index(d) for d in dx_of.values()], minlength=7).tolist())
    # each image's label is its metadata dx: match decoded images back to their files
    decoded = {image_id: mf._decode([path], "check")[0] for image_id, path in present.items()}
    split_of_lesion = {}
    for s in SPLITS:
        for img, y in zip(raw.images[s], raw.labels[s].reshape(-1)):
            [image_id] = [i for i, d in decoded.items() if np.array_equal(d, img)]
            assert mf.HAM_CLASSES[int(y)] == dx_of[image_id]
            split_of_lesion.setdefault(lesion_of[image_id], set()).add(s)
    assert len(split_of_lesion) == 112 and all(len(v) == 1 for v in split_of_lesion.values())
    assert (tmp_path / "skin-ham_112.npz").is_file()
    _, again = _load("skin-ham", tmp_path)  # from the 112 px cache
    assert all(np.array_equal(again.images[s], raw.images[s]) for s in SPLITS)


# ------------------------------------------------------------------------------- genuine BUSI files
BUSI_SAMPLE = SHARED_DATA / "busi_sample" / "Dataset_BUSI_with_GT"
needs_busi = pytest.mark.skipif(not BUSI_SAMPLE.is_dir(), reason=f"genuine BUSI sample not found at {BUSI_SAMPLE}")


@pytest.fixture
def busi_copy(tmp_path):
    """A writable copy of the genuine BUSI sample (26 images, 29 masks) under tmp_path/Dataset_BUSI_with_GT."""
    import shutil
    shutil.copytree(BUSI_SAMPLE, tmp_path / "Dataset_BUSI_with_GT")
    return tmp_path


@needs_busi
def test_genuine_busi_sample_masks_labels_split_and_cache(busi_copy, monkeypatch):
    root = busi_copy / "Dataset_BUSI_with_GT"
    images = {c: sorted(p.name for p in (root / c).iterdir() if "_mask" not in p.name) for c in mf.BUSI_CLASSES}
    masks = [p for p in root.rglob("*.png") if "_mask" in p.name]
    assert [len(images[c]) for c in mf.BUSI_CLASSES] == [9, 9, 8] and len(masks) == 29
    assert any(p.stem.endswith("_mask_1") for p in masks)  # the extra masks are in the sample
    (root / "benign" / "benign (1)_mask_2.png").write_bytes((root / "benign" / "benign (1)_mask.png").read_bytes())

    files, labels, groups = mf.LAYOUTS["breast-uls"].list_images(root, mf.BUSI_CLASSES)
    assert groups is None
    assert sorted(p.name for p in files) == sorted(n for c in mf.BUSI_CLASSES for n in images[c])  # no mask got in
    for path, y in zip(files, labels):
        assert path.parent.name == mf.BUSI_CLASSES[y]  # the label is the class folder

    spec, built = _load("breast-uls", busi_copy)
    counts = json.loads((busi_copy / "breast-uls_112.json").read_text())["counts"]
    # stratified 70/10/20 per class with seed 0: each class's share of every split is its rounded share
    for c, name in enumerate(mf.BUSI_CLASSES):
        per_split = {s: counts[s][name] for s in SPLITS}
        assert sum(per_split.values()) == len(images[name])
        assert per_split == {s: int((built.labels[s] == c).sum()) for s in SPLITS}
        assert abs(per_split["train"] - 0.7 * len(images[name])) <= 1
        assert abs(per_split["test"] - 0.2 * len(images[name])) <= 1
    assert sum(len(built.labels[s]) for s in SPLITS) == 26
    assert all(built.images[s].shape[1:] == (112, 112, 3) for s in SPLITS)
    # masks are binary 0/255; every decoded ultrasound image has a full grey range
    every = np.concatenate([built.images[s] for s in SPLITS])
    assert all(len(np.unique(img)) > 50 for img in every)

    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("the cache must be read without decoding"))
    _, cached = _load("breast-uls", busi_copy)
    assert cached.checksum == built.checksum
    assert all(np.array_equal(cached.images[s], built.images[s]) for s in SPLITS)


@needs_busi
def test_genuine_busi_missing_class_folder_says_which(busi_copy):
    import shutil
    shutil.rmtree(busi_copy / "Dataset_BUSI_with_GT" / "malignant")
    with pytest.raises(DataError, match="'malignant'") as info:
        _load("breast-uls", busi_copy)
    assert "Dataset_BUSI_with_GT" in str(info.value)
    assert not (busi_copy / "breast-uls_112.npz").exists()


@needs_busi
def test_genuine_busi_stray_non_image_file_is_named(busi_copy):
    folder = busi_copy / "Dataset_BUSI_with_GT" / "normal"
    (folder / ".DS_Store").write_bytes(b"\0\0")  # system files are ignored
    (folder / "Thumbs.db").write_bytes(b"\0")
    (folder / "notes.txt").write_text("reviewed by Dr X")
    with pytest.raises(DataError, match=r"notes\.txt") as info:
        _load("breast-uls", busi_copy)
    assert "not images" in str(info.value) and ".DS_Store" not in str(info.value)
    (folder / "notes.txt").unlink()
    _, raw = _load("breast-uls", busi_copy)
    assert sum(len(raw.labels[s]) for s in SPLITS) == 26
