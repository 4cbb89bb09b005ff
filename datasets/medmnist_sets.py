"""Every MedMNIST flag at every size the ``medmnist`` package lists, metadata from ``medmnist.INFO``.

Names are the flags (``pathmnist``) for 28 px and ``<flag>_<size>`` for the larger files. PathMNIST,
OCTMNIST and OrganMNIST3D at 28 px are three of the six MDD benchmark datasets.
"""
from __future__ import annotations

from pathlib import Path

import medmnist
from medmnist import INFO

from mddbench.data.dataset import DatasetSpec, RawArrays, read_npz, verified_md5
from mddbench.data.download import download
from mddbench.errors import DataError
from mddbench.registry import register_dataset

SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)
CITATION = ("Yang, J. et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image "
            "classification. Scientific Data 10, 41 (2023).")
# medmnist sets DEFAULT_ROOT to None when it cannot create ~/.medmnist at import: a read-only home, or two
# processes importing it at once on a fresh machine (its exists-then-makedirs check races). The folder is
# only a second place to look for files, so fall back to its usual path instead of failing the import.
MEDMNIST_ROOT = Path(getattr(medmnist.info, "DEFAULT_ROOT", None) or "~/.medmnist").expanduser()


def _load(spec: DatasetSpec, root: Path, offline: bool) -> RawArrays:
    path = spec.locate(root)
    if path is None:
        path = root / spec.filename
        if offline:
            raise DataError(_missing_message(spec, root, "offline mode is on"))
        try:
            download(spec.url, path, spec.md5)
        except DataError as exc:
            raise DataError(_missing_message(spec, root, str(exc))) from exc
    digest = verified_md5(path)
    if digest != spec.md5:
        raise DataError(f"{path} is corrupt: its MD5 is {digest}, expected {spec.md5} "
                        f"(MedMNIST {medmnist.__version__}). Delete it and download it again from {spec.url}")
    images, labels = read_npz(path, spec.n_samples)
    return RawArrays(images, labels, digest, str(path))


def _find(spec: DatasetSpec, root: Path) -> Path | None:
    """The data root first, then medmnist's own folder (files its users already have)."""
    for folder in (root, MEDMNIST_ROOT):
        if (folder / spec.filename).is_file():
            return folder / spec.filename
    return None


def _missing_message(spec: DatasetSpec, root: Path, why: str) -> str:
    return (f"{spec.filename} is not in {root} and could not be downloaded ({why}).\n"
            f"  Download it from {spec.url}\n  (MD5 {spec.md5}) and put it in {root},\n"
            f"  or point --data-root (or the MDDBENCH_DATA environment variable) at the folder that holds it.")


def _register(flag: str, size: int) -> None:
    info = INFO[flag]
    suffix = "" if size == 28 else f"_{size}"
    is3d = flag.endswith("3d")
    name = f"{flag}{suffix}"
    register_dataset(name, DatasetSpec(
        name=name,
        title=f"{info['python_class']} ({size}{'^3' if is3d else 'x' + str(size)})",
        source="medmnist",
        dims=3 if is3d else 2,
        channels=int(info["n_channels"]),
        size=size,
        label_names=tuple(info["label"][str(i)] for i in range(len(info["label"]))),
        task=info["task"],
        license=info["license"],
        citation=CITATION,
        description=info["description"],
        load=_load,
        find=_find,
        n_samples=dict(info["n_samples"]),
        filename=f"{flag}{suffix}.npz",
        md5=info["MD5" if size == 28 else f"MD5_{size}"],
        url=info["url" if size == 28 else f"url_{size}"],
        where="put the npz file in the data root or ~/.medmnist (downloaded automatically when online)",
    ), aliases=("organ3d",) if name == "organmnist3d" else ())


for _flag in INFO:
    for _size in SIZES_3D if _flag.endswith("3d") else SIZES_2D:
        if ("MD5" if _size == 28 else f"MD5_{_size}") in INFO[_flag]:
            _register(_flag, _size)
