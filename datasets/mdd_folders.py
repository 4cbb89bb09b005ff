"""The three high-resolution MDD benchmark datasets that come as raw image folders.

``covid19-cxr`` (COVID-19 Radiography Database), ``skin-ham`` (HAM10000) and ``breast-uls`` (BUSI)
cannot be downloaded automatically: the user unpacks the public archive under the data root. The
first load lists the images (segmentation masks excluded), decodes them to 3x112x112 (grey
replicated to RGB, bicubic antialiased resize, aspect ratio not preserved, as MedMNIST does), splits
them 70 / 10 / 20 train / val / test, stratified by class with the fixed seed :data:`SPLIT_SEED`
(HAM10000: by lesion, so images of one lesion never straddle splits), and caches the result as
``<data_root>/<name>_112.npz`` in the MedMNIST layout, with a JSON sidecar holding its MD5, the
source folder, the seed and the per-split per-class counts. Later loads read only the npz.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from mddbench.atomic import replacing, write_json
from mddbench.data.dataset import SPLITS, DatasetSpec, RawArrays, md5sum, read_npz
from mddbench.errors import DataError
from mddbench.registry import register_dataset

SIZE = 112
SPLIT_SEED = 0
FRACTIONS = (0.7, 0.1, 0.2)
FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# (files, labels, groups or None) found in an unpacked archive
Listing = tuple[list[Path], np.ndarray, "np.ndarray | None"]


# ------------------------------------------------------------------------------------------ split
def stratified_split(labels, fractions=FRACTIONS, seed: int = SPLIT_SEED, groups=None) -> dict[str, np.ndarray]:
    """Indices of a seeded split stratified by class, ``{split: sorted indices}`` for :data:`SPLITS`.

    The units shuffled and assigned are the ``groups`` (all items of a group land in one split; a
    group's class is its most common label), or single items when ``groups`` is None. Per class, the
    shuffled units are cut where the cumulative number of items comes closest to each split's share
    of that class's items. Deterministic for a given seed (units are taken in sorted order first).
    """
    labels = np.asarray(labels).reshape(-1)
    fractions = np.asarray(fractions, dtype=np.float64)
    if len(fractions) != len(SPLITS) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative numbers summing to 1, got {fractions}")
    if groups is None:
        unit = np.arange(len(labels))
    else:
        groups = np.asarray(groups).reshape(-1)
        if len(groups) != len(labels):
            raise ValueError(f"{len(groups)} groups for {len(labels)} labels")
        unit = np.unique(groups, return_inverse=True)[1].reshape(-1)
    classes, label_idx = np.unique(labels, return_inverse=True)
    n_units = int(unit.max()) + 1 if len(unit) else 0
    unit_size = np.bincount(unit, minlength=n_units)
    votes = np.zeros((n_units, len(classes)), dtype=np.int64)
    np.add.at(votes, (unit, label_idx.reshape(-1)), 1)
    unit_class = votes.argmax(axis=1)
    rng = np.random.default_rng(seed)
    unit_split = np.empty(n_units, dtype=np.int64)
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(unit_class == c))
        reached = np.concatenate([[0], np.cumsum(unit_size[members])])  # items before each cut position
        targets = np.cumsum(fractions)[:-1] * reached[-1]
        cuts = [int(np.argmin(np.abs(reached - t))) for t in targets]
        for s, (lo, hi) in enumerate(zip([0] + cuts, cuts + [len(members)])):
            unit_split[members[lo:hi]] = s
    item_split = unit_split[unit]
    return {split: np.flatnonzero(item_split == s) for s, split in enumerate(SPLITS)}


# --------------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Layout:
    """Where an unpacked archive may sit under the data root and how to list its images."""

    folders: tuple[str, ...]  # candidate folders relative to the data root ("." is the root itself)
    is_archive: Callable[[Path], bool]
    list_images: Callable[[Path, tuple[str, ...]], Listing]  # (archive folder, class keys)
    classes: tuple[str, ...]  # class folder names or label codes, in label order
    expected: str  # the layout, for error messages


def _image_files(folder: Path, suffixes=IMAGE_SUFFIXES, exclude: Callable[[Path], bool] = lambda p: False) -> list[Path]:
    """Image files anywhere under ``folder``, sorted, without those ``exclude`` (given the relative path) rejects."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in suffixes and p.is_file() and not exclude(p.relative_to(folder)))


# files an operating system leaves in a folder, never data: ignored, not reported as stray
SYSTEM_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")


def _stray_files(folder: Path) -> list[Path]:
    """Files under ``folder`` that are neither images nor system or hidden files (sorted)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES
                  and p.name not in SYSTEM_FILES and not p.name.startswith("."))


def _class_folders(exclude: Callable[[Path], bool]) -> Callable[[Path, tuple[str, ...]], Listing]:
    """Lister for archives with one folder per class."""

    def list_images(folder: Path, classes: tuple[str, ...]) -> Listing:
        files, labels = [], []
        for c, name in enumerate(classes):
            stray = _stray_files(folder / name)
            if stray:
                shown = ", ".join(str(p.relative_to(folder)) for p in stray[:5])
                raise DataError(f"{len(stray)} file(s) in {folder / name} are not images ({', '.join(IMAGE_SUFFIXES)}): "
                                f"{shown}{' ...' if len(stray) > 5 else ''}; move them out of the class folder "
                                "(a file there is either an image of that class or a mask)")
            found = _image_files(folder / name, exclude=exclude)
            if not found:
                raise DataError(f"class folder {folder / name} holds no images")
            files += found
            labels += [c] * len(found)
        return files, np.array(labels, dtype=np.uint8), None

    return list_images


HAM_CSV = "HAM10000_metadata.csv"
# Harvard Dataverse serves its tabular conversion by default: tab-separated, strings in double quotes
HAM_METADATA = (HAM_CSV, "HAM10000_metadata.tab")


def _ham_metadata(folder: Path) -> Path | None:
    return next((folder / name for name in HAM_METADATA if (folder / name).is_file()), None)


def _ham_listing(folder: Path, classes: tuple[str, ...]) -> Listing:
    """HAM10000: labels and lesions from the metadata table, JPEGs found anywhere beside it."""
    images: dict[str, Path] = {}
    for p in _image_files(folder, suffixes=(".jpg", ".jpeg")):
        images.setdefault(p.stem, p)  # Kaggle's copy holds each part twice (HAM10000_... and ham10000_...)
    files, labels, lesions, missing = [], [], [], []
    csv_path = _ham_metadata(folder)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        delimiter = "\t" if "\t" in f.readline() else ","  # the header says which of the two it is
        f.seek(0)
        for row in csv.DictReader(f, delimiter=delimiter):
            try:
                image_id, dx, lesion = row["image_id"].strip(), row["dx"].strip(), row["lesion_id"].strip()
            except (KeyError, AttributeError) as exc:
                raise DataError(f"{csv_path} lacks the columns lesion_id, image_id, dx") from exc
            if dx not in classes:
                raise DataError(f"{csv_path}: image {image_id} has dx {dx!r}, expected one of {', '.join(classes)}")
            if image_id not in images:
                missing.append(image_id)
                continue
            files.append(images[image_id])
            labels.append(classes.index(dx))
            lesions.append(lesion)
    if missing:
        raise DataError(f"{csv_path} lists {len(missing)} of its {len(missing) + len(files)} images that are nowhere "
                        f"under {folder} (first: {missing[0]}.jpg): a partial download. Unpack both image parts "
                        f"beside the metadata, or keep only the rows of the images present")
    if not files:
        raise DataError(f"{csv_path} lists no images")
    return files, np.array(labels, dtype=np.uint8), np.array(lesions)


COVID_CLASSES = ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia")
HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
BUSI_CLASSES = ("benign", "malignant", "normal")
_BUSI_MASK = re.compile(r"_mask(_\d+)?$")

LAYOUTS = {
    "covid19-cxr": Layout(
        folders=(".", "COVID-19_Radiography_Dataset", "COVID-19 Radiography Database",
                 "COVID-19_Radiography_Database", "archive/COVID-19_Radiography_Dataset"),
        is_archive=lambda d: all((d / c).is_dir() for c in COVID_CLASSES),
        list_images=_class_folders(exclude=lambda rel: "masks" in rel.parts),
        classes=COVID_CLASSES,
        expected="COVID-19_Radiography_Dataset/{COVID,Normal,Lung_Opacity,Viral Pneumonia}/images/*.png "
                 "(or the PNGs directly in each class folder); masks/ folders are ignored"),
    "skin-ham": Layout(
        folders=(".", "HAM10000", "dataverse_files", "skin-cancer-mnist-ham10000", "archive"),
        is_archive=lambda d: _ham_metadata(d) is not None,
        list_images=_ham_listing,
        classes=HAM_CLASSES,
        expected=f"{HAM_CSV} or Dataverse's .tab (columns lesion_id, image_id, dx, ...) with the JPEGs "
                 "<image_id>.jpg beside it, "
                 "e.g. in HAM10000_images_part_1/ and HAM10000_images_part_2/"),
    "breast-uls": Layout(
        folders=(".", "Dataset_BUSI_with_GT", "archive/Dataset_BUSI_with_GT"),
        is_archive=lambda d: all((d / c).is_dir() for c in BUSI_CLASSES),
        list_images=_class_folders(exclude=lambda rel: bool(_BUSI_MASK.search(rel.stem))),
        classes=BUSI_CLASSES,
        expected="Dataset_BUSI_with_GT/{benign,malignant,normal}/*.png; *_mask.png, *_mask_1.png ... are ignored"),
}


# ----------------------------------------------------------------------------------- decode/cache
def _decode(files: list[Path], desc: str) -> np.ndarray:
    """uint8 (N, SIZE, SIZE, 3): RGB (grey replicated), bicubic antialiased resize, aspect not kept."""
    out = np.empty((len(files), SIZE, SIZE, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(files, desc=desc, unit="img")):
        try:
            with Image.open(path) as im:
                out[i] = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    return out


def _sidecar(npz: Path) -> Path:
    return npz.with_suffix(".json")


def _write_cache(spec: DatasetSpec, npz: Path, source: Path, images: dict, labels: dict) -> str:
    """Write the npz and its sidecar atomically, the sidecar first so an npz never lacks one; returns the md5."""
    with replacing(npz) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **{f"{s}_{kind}": arrays[s] for s in SPLITS
                           for kind, arrays in (("images", images), ("labels", labels))})
        digest = md5sum(tmp)
        meta = {
            "format_version": FORMAT_VERSION, "dataset": spec.name, "md5": digest, "source": str(source),
            "split_seed": SPLIT_SEED, "fractions": list(FRACTIONS), "size": SIZE,
            "counts": {s: {name: int((labels[s] == c).sum()) for c, name in enumerate(spec.label_names)}
                       for s in SPLITS},
        }
        write_json(_sidecar(npz), meta, indent=1)
    return digest


def _read_cache(spec: DatasetSpec, npz: Path) -> RawArrays:
    rebuild = f"delete {npz} (and {_sidecar(npz).name}) to rebuild it from the image folder"
    try:
        meta = json.loads(_sidecar(npz).read_text())
        expected_md5, version = meta["md5"], meta["format_version"]
        expected_n = {s: sum(meta["counts"][s].values()) for s in SPLITS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"the cache {npz} has no valid sidecar {_sidecar(npz).name} ({exc}); {rebuild}") from exc
    if version != FORMAT_VERSION:
        raise DataError(f"the cache {npz} has format version {version}, this mddbench writes {FORMAT_VERSION}; "
                        f"{rebuild}")
    digest = md5sum(npz)
    if digest != expected_md5:
        raise DataError(f"the cache {npz} is corrupt: its MD5 is {digest}, its sidecar says {expected_md5}; "
                        f"{rebuild}")
    images, labels = read_npz(npz, expected_n)
    return RawArrays(images, labels, checksum=digest, path=str(npz))


def _load(spec: DatasetSpec, root: Path, offline: bool) -> RawArrays:
    """Read the cached npz, or build it from the unpacked archive (``offline`` is moot: never downloaded)."""
    npz = root / spec.filename
    if npz.is_file():
        return _read_cache(spec, npz)
    layout = LAYOUTS[spec.name]
    candidates = [root / f for f in layout.folders]
    source = next((d for d in candidates if layout.is_archive(d)), None)
    if source is None:
        partial = next((d for d in candidates if d.is_dir() and layout.classes
                        and any((d / c).is_dir() for c in layout.classes)), None)
        if partial is not None and not all((partial / c).is_dir() for c in layout.classes):
            missing = [c for c in layout.classes if not (partial / c).is_dir()]
            raise DataError(f"{spec.name}: {partial} holds some of the class folders but not "
                            f"{', '.join(repr(m) for m in missing)}; expected layout: {layout.expected}. "
                            "Unpack the whole archive there (a class cannot be left out: the split and the "
                            "labels depend on all of them).")
        raise DataError(
            f"{spec.name} ({spec.title}): neither the cache {npz} nor the unpacked archive was found.\n"
            f"  Searched: {', '.join(str(d) for d in candidates)}\n"
            f"  Expected layout: {layout.expected}\n"
            f"  Get the archive from {spec.url} and unpack it into {root},\n"
            f"  or point --data-root (or the MDDBENCH_DATA environment variable) at the folder that holds it.")
    files, labels, groups = layout.list_images(source, layout.classes)
    split = stratified_split(labels, FRACTIONS, SPLIT_SEED, groups)
    images = {s: _decode([files[i] for i in split[s]], f"{spec.name} {s}") for s in SPLITS}
    labels = {s: labels[split[s]].reshape(-1, 1) for s in SPLITS}
    try:
        digest = _write_cache(spec, npz, source, images, labels)
    except OSError as exc:
        raise DataError(f"cannot write the cache {npz}: {exc}") from exc
    return RawArrays(images, labels, checksum=digest, path=str(npz))


# --------------------------------------------------------------------------------------- register
_PREP = ("Ours: RGB (grey replicated), resized to 112x112 with PIL's antialiased bicubic filter (the aspect "
         "ratio is not preserved, as MedMNIST does), a stratified 70/10/20 train/val/test split with seed "
         f"{SPLIT_SEED}, cached as <name>_112.npz in the MedMNIST layout.")


def _register(name: str, title: str, label_names: tuple[str, ...], license: str, citation: str, url: str,
              about: str, where: str) -> None:
    register_dataset(name, DatasetSpec(
        name=name, title=title, source="folder", dims=2, channels=3, size=SIZE, label_names=label_names,
        task="multi-class", license=license, citation=citation, description=f"{about} {_PREP}", load=_load,
        n_samples=None, filename=f"{name}_{SIZE}.npz", url=url, where=where))


_register(
    "covid19-cxr", "COVID-19 Radiography Database (3x112x112, 4 classes)",
    ("COVID", "Normal", "Lung Opacity", "Viral Pneumonia"),
    license="as published on Kaggle (COVID-19 Radiography Database terms of use)",
    citation=("Chowdhury, M.E.H. et al. Can AI help in screening viral and COVID-19 pneumonia? IEEE Access 8, "
              "132665-132676 (2020); Rahman, T. et al. Exploring the effect of image enhancement techniques on "
              "COVID-19 detection using chest X-ray images. Computers in Biology and Medicine 132, 104319 (2021)."),
    url="https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
    about=("Chest X-rays (21,165 in the 2021 release: 3,616 COVID-19, 10,192 normal, 6,012 lung opacity, "
           "1,345 viral pneumonia); the lung masks shipped with it are not used."),
    where=("Download the COVID-19 Radiography Database from "
           "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database and unpack it into the "
           "data root, so that <data-root>/COVID-19_Radiography_Dataset/{COVID,Normal,Lung_Opacity,Viral "
           "Pneumonia}/ exist (the class folders may also sit directly in the data root). The first load builds "
           "covid19-cxr_112.npz there; afterwards the image folder is no longer read."))
_register(
    "skin-ham", "HAM10000 dermatoscopy (3x112x112, 7 classes)",
    ("akiec (actinic keratoses / intraepithelial carcinoma)", "bcc (basal cell carcinoma)",
     "bkl (benign keratosis-like lesions)", "df (dermatofibroma)", "mel (melanoma)", "nv (melanocytic nevi)",
     "vasc (vascular lesions)"),
    license="CC BY-NC 4.0",
    citation=("Tschandl, P., Rosendahl, C. & Kittler, H. The HAM10000 dataset, a large collection of multi-source "
              "dermatoscopic images of common pigmented skin lesions. Scientific Data 5, 180161 (2018)."),
    url="https://doi.org/10.7910/DVN/DBW86T",
    about=("10,015 dermatoscopic images of pigmented skin lesions, labelled by diagnosis (dx). Several images "
           "show the same lesion, so the split is group-aware by lesion_id: a lesion's images never straddle "
           "splits."),
    where=("Download HAM10000 from https://doi.org/10.7910/DVN/DBW86T (Harvard Dataverse; the Kaggle mirror "
           "'skin-cancer-mnist-ham10000' works too) and unpack it into the data root, so that "
           "<data-root>/HAM10000_metadata.csv (or Dataverse's HAM10000_metadata.tab; also under "
           "<data-root>/HAM10000/) sits beside the unzipped HAM10000_images_part_1/ and HAM10000_images_part_2/ "
           "folders. The first load builds "
           "skin-ham_112.npz there."))
_register(
    "breast-uls", "BUSI breast ultrasound (3x112x112, 3 classes)", BUSI_CLASSES,
    license="CC BY 4.0",
    citation=("Al-Dhabyani, W., Gomaa, M., Khaled, H. & Fahmy, A. Dataset of breast ultrasound images. "
              "Data in Brief 28, 104863 (2020)."),
    url="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
    about=("780 breast ultrasound images of women aged 25-75 (437 benign, 210 malignant, 133 normal); the "
           "segmentation masks (*_mask*.png) shipped with them are not used."),
    where=("Download the Breast Ultrasound Images Dataset (BUSI) from "
           "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset and unpack it into the data root, so that "
           "<data-root>/Dataset_BUSI_with_GT/{benign,malignant,normal}/ exist. The first load builds "
           "breast-uls_112.npz there."))
