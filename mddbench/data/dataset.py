"""Dataset specs (one declarative record per dataset, as MedMNIST's ``INFO``) and loaded real data.

A :class:`DatasetSpec` says everything about a dataset that does not need the data itself; its
``load`` function turns a data root into uint8 arrays in the MedMNIST npz layout. :func:`load_dataset`
adds what every dataset shares: normalisation from the train split, tensors in (N, C, *spatial)
layout, per-class indices and the checksum that goes into every result record.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mddbench.atomic import write_json
from mddbench.errors import ConfigError, DataError
from mddbench.registry import DATASETS

SPLITS = ("train", "val", "test")
ENV_DATA_ROOT = "MDDBENCH_DATA"
ENV_OFFLINE = "MDDBENCH_OFFLINE"
DEFAULT_DATA_ROOT = Path("~/.mddbench/data")


# the six MDD benchmark datasets, in the paper's order (the order of the leaderboards' columns too)
BENCHMARK = ("pathmnist", "octmnist", "organmnist3d", "covid19-cxr", "breast-uls", "skin-ham")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    source: str  # "medmnist", "folder" or "generated"
    dims: int  # 2 or 3 spatial dimensions
    channels: int
    size: int  # side length in pixels (voxels for 3D)
    label_names: tuple[str, ...]
    task: str  # MedMNIST's task string: "multi-class", "binary-class", ...
    license: str
    citation: str
    description: str
    load: Callable[["DatasetSpec", Path, bool], "RawArrays"] = field(repr=False, compare=False)
    n_samples: dict[str, int] | None = None  # known in advance for MedMNIST, after caching otherwise
    filename: str | None = None  # the file the loader reads or writes under the data root
    md5: str | None = None
    url: str | None = None
    where: str = ""  # how a user puts the data in place (printed by ``mddbench info``)
    find: Callable[["DatasetSpec", Path], Path | None] | None = field(default=None, repr=False, compare=False)

    @property
    def benchmark(self) -> bool:
        """One of the six MDD benchmark datasets (:data:`BENCHMARK`)."""
        return self.name in BENCHMARK

    def locate(self, root: Path) -> Path | None:
        """The file the loader reads for data root ``root``, None when absent (or the dataset has no file).

        ``find`` lets a source look beyond the root (MedMNIST files in medmnist's own ``~/.medmnist``).
        """
        if self.find is not None:
            return self.find(self, root)
        path = root / self.filename if self.filename else None
        return path if path is not None and path.is_file() else None

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels,) + (self.size,) * self.dims

    def check_distillable(self) -> None:
        if self.task.startswith("multi-label"):
            raise ConfigError(
                f"{self.name} is a multi-label task; distillation methods here assume one label per image "
                "(images per class is undefined). Choose a multi-class or binary dataset.")


@dataclass
class RawArrays:
    """uint8 images in MedMNIST layout ((N,H,W), (N,H,W,C) or (N,D,H,W)) and (N,) int labels."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    checksum: str  # md5 of the file the arrays came from (or of the arrays, for generated data)
    path: str | None = None


@dataclass
class RealData:
    """A loaded, normalised dataset: float tensors in (N, C, *spatial) layout and int64 labels."""

    spec: DatasetSpec
    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    checksum: str
    path: str | None = None
    _class_index: list[torch.Tensor] | None = field(default=None, repr=False)

    @property
    def n_classes(self) -> int:
        return self.spec.n_classes

    def class_indices(self) -> list[torch.Tensor]:
        """Indices of the train split per class."""
        if self._class_index is None:
            y = self.y["train"]
            self._class_index = [torch.nonzero(y == c).flatten() for c in range(self.n_classes)]
        return self._class_index

    def class_counts(self) -> list[int]:
        return [len(i) for i in self.class_indices()]

    def sample_class(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` train images of class ``c`` drawn without replacement (all of them if fewer)."""
        idx = self.class_indices()[c]
        perm = torch.randperm(len(idx), generator=generator)[:n]
        return self.x["train"][idx[perm]]

    def to(self, device: torch.device | str) -> "RealData":
        """A view of this data on ``device`` (the train split moves; evaluation moves batches)."""
        device = torch.device(device)
        if self.x["train"].device == device:
            return self
        return RealData(self.spec, {**self.x, "train": self.x["train"].to(device)},
                        {**self.y, "train": self.y["train"].to(device)}, self.mean, self.std, self.checksum, self.path)

    def describe(self) -> dict:
        return {"dataset": self.spec.name, "checksum": self.checksum, "mean": list(self.mean), "std": list(self.std),
                "n_samples": {s: int(len(self.y[s])) for s in SPLITS}}


# ------------------------------------------------------------------------------------------- roots
def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``--data-root``, else ``$MDDBENCH_DATA``, else ``~/.mddbench/data``."""
    if root is None:
        root = os.environ.get(ENV_DATA_ROOT) or DEFAULT_DATA_ROOT
    return Path(root).expanduser()


def offline_mode(offline: bool | None = None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get(ENV_OFFLINE, "").lower() in ("1", "true", "yes")


def get_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def md5sum(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


CACHE_ABOVE_BYTES = 64 << 20  # smaller files hash in well under a second: always hashed afresh


def verified_md5(path: Path) -> str:
    """md5 of ``path``; for large files remembered under the user cache, keyed by path, size, inode and
    mtime, so a 10 GB file hashes once. Nothing is ever written beside the data (it may be read-only)."""
    stat = path.stat()
    if stat.st_size < CACHE_ABOVE_BYTES:
        return md5sum(path)
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "mddbench" / "md5"
    stamp = cache_dir / (hashlib.sha1(str(path.resolve()).encode()).hexdigest() + ".json")
    key = f"{stat.st_size}:{stat.st_ino}:{stat.st_mtime_ns}"
    try:
        cached = json.loads(stamp.read_text())
        if cached.get("key") == key:
            return cached["md5"]
    except (OSError, ValueError, KeyError):
        pass
    digest = md5sum(path)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_json(stamp, {"path": str(path.resolve()), "key": key, "md5": digest})
    except OSError:
        pass  # no cache folder just means hashing again next time
    return digest


def read_npz(path: Path, expected_n: dict[str, int] | None = None) -> tuple[dict, dict]:
    """Read a MedMNIST-layout npz safely (no pickles) with errors that name the file."""
    keys = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if not missing:
                images = {s: f[f"{s}_images"] for s in SPLITS}
                labels = {s: np.asarray(f[f"{s}_labels"]) for s in SPLITS}
    except Exception as exc:  # BadZipFile, truncated member, pickled object arrays ...
        raise DataError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
                        "delete it and download or build it again") from exc
    if missing:
        raise DataError(f"{path} lacks the array(s) {', '.join(missing)}; expected keys {', '.join(keys)}")
    for s in SPLITS:
        if len(images[s]) != len(labels[s]):
            raise DataError(f"{path}: {s} has {len(images[s])} images but {len(labels[s])} labels")
        if expected_n and expected_n.get(s) is not None and len(images[s]) != expected_n[s]:
            raise DataError(f"{path}: {s} has {len(images[s])} images, the dataset has {expected_n[s]}")
    return images, labels


# ------------------------------------------------------------------------------------------ loading
def to_tensor_layout(images: np.ndarray, spec: DatasetSpec) -> torch.Tensor:
    """uint8 MedMNIST layout -> float32 in [0, 1], (N, C, *spatial)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if spec.dims == 3:
        x = x.unsqueeze(1) if x.ndim == 4 else x.permute(0, 4, 1, 2, 3)
    elif x.ndim == 3:
        x = x.unsqueeze(1)
    else:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != spec.channels:
        if x.shape[1] == 1:
            x = x.expand(-1, spec.channels, *x.shape[2:])
        else:
            raise DataError(f"{spec.name}: images have {x.shape[1]} channels, the dataset declares {spec.channels}")
    return x.float().div_(255.0)


def check_arrays(raw: RawArrays, spec: DatasetSpec) -> None:
    """Refuse arrays that are not the dataset's: uint8 images of its size, integer class labels."""
    where = raw.path or spec.name
    fix = f"; delete {raw.path} so that mddbench downloads or builds it again" if raw.path else ""
    layouts = [(spec.size,) * spec.dims, (spec.size,) * spec.dims + (spec.channels,)]
    if spec.channels != 1:
        layouts.append((spec.size,) * spec.dims + (1,))
    for s in SPLITS:
        images, labels = raw.images[s], np.asarray(raw.labels[s])
        if images.dtype != np.uint8:
            raise DataError(f"{where}: {s}_images are {images.dtype}, expected uint8 pixels (the MedMNIST layout){fix}")
        if tuple(images.shape[1:]) not in layouts:
            raise DataError(f"{where}: {s}_images have shape {tuple(images.shape)}, {spec.name} is "
                            f"{'x'.join(map(str, spec.shape))} (expected (N, {', '.join(map(str, layouts[-1]))})){fix}")
        if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.isfinite(labels).all()
                                                  and (labels == np.round(labels)).all()):
            raise DataError(f"{where}: {s}_labels are {labels.dtype} values that are not all class indices{fix}")


def load_dataset(name: str | DatasetSpec, root: str | os.PathLike | None = None,
                 offline: bool | None = None) -> RealData:
    spec = get_spec(name) if isinstance(name, str) else name
    raw = spec.load(spec, data_root(root), offline_mode(offline))
    check_arrays(raw, spec)
    x = {s: to_tensor_layout(raw.images[s], spec) for s in SPLITS}
    y = {s: torch.as_tensor(np.asarray(raw.labels[s]).reshape(len(raw.labels[s]), -1)[:, 0].astype(np.int64))
         for s in SPLITS}
    for s in SPLITS:
        if len(y[s]) and (int(y[s].min()) < 0 or int(y[s].max()) >= spec.n_classes):
            raise DataError(f"{spec.name}: {s} labels outside 0..{spec.n_classes - 1}")
    reduce_dims = [0] + list(range(2, 2 + spec.dims))
    mean = x["train"].mean(dim=reduce_dims)
    std = x["train"].std(dim=reduce_dims).clamp_min(1e-6)
    shape = (1, -1) + (1,) * spec.dims
    for s in SPLITS:
        x[s] = (x[s] - mean.view(shape)) / std.view(shape)
    return RealData(spec, x, y, tuple(mean.tolist()), tuple(std.tolist()), raw.checksum, raw.path)


def denormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Back to [0, 1] for display."""
    shape = (1, -1) + (1,) * (images.ndim - 2)
    m = torch.as_tensor(mean, dtype=images.dtype).view(shape)
    s = torch.as_tensor(std, dtype=images.dtype).view(shape)
    return (images.cpu() * s + m).clamp(0, 1)
