"""A saved synthetic set and the real data it was made from, verified together.

``mddbench eval`` and ``mddbench privacy`` both score a set file against its own dataset; both load it
here, so a set is refused for the same reasons with the same words whichever command reads it.
"""
from __future__ import annotations

from pathlib import Path

from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import RealData, load_dataset
from mddbench.errors import ArtifactError, DataError


def resolve_artifact(path: str | Path) -> Path:
    """A ``.safetensors`` set, or the ``synset.safetensors`` of a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "synset.safetensors"
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (give a .safetensors synthetic set or a run folder)")
    return path


def load_with_data(artifact: str | Path, data_root: str | None, purpose: str,
                   require_checksum: bool = False) -> tuple[SyntheticSet, RealData, Path]:
    """The set, the data it was made from and the set's path; ``purpose`` ("evaluate", "audit") names the
    command in the refusals. A set recording no data checksum is refused where ``require_checksum``
    (an audit must know the patients are the ones the set was made from), else scored as it is."""
    path = resolve_artifact(artifact)
    synset = SyntheticSet.load(path)
    meta = synset.meta
    if "dataset" not in meta:
        raise ArtifactError(f"{path} has no dataset in its metadata (it was not made by mddbench); to {purpose} it "
                            "needs the data it was made from")
    if not isinstance(meta["dataset"], str) or not meta["dataset"]:
        raise ArtifactError(f"{path} names its dataset {meta['dataset']!r} in its metadata, not a dataset name")

    if require_checksum and not meta.get("data_checksum"):
        raise ArtifactError(f"{path} records no data checksum, so the data it was made from cannot be verified")
    try:
        data = load_dataset(meta["dataset"], data_root)
    except DataError as exc:
        raise DataError(f"cannot {purpose} {path}: that needs {meta['dataset']}, the data it was distilled from. "
                        f"{exc}") from exc
    if meta.get("data_checksum") and data.checksum != meta["data_checksum"]:
        raise DataError(f"cannot {purpose} {path}: {meta['dataset']} on disk{f' ({data.path})' if data.path else ''} "
                        f"has md5 {data.checksum}, but the set was distilled from data with md5 "
                        f"{meta['data_checksum']}: scores against other data would not be this set's. Point "
                        f"--data-root at the data the set was made from.")
    if tuple(synset.images.shape[1:]) != data.spec.shape and synset.renderer is None:
        raise ArtifactError(f"{path} holds images of shape {tuple(synset.images.shape[1:])}, "
                            f"{data.spec.name} has {data.spec.shape}")
    return synset, data, path


def own_seed(synset: SyntheticSet, path: str | Path) -> int:
    """The seed a set's metadata records (0 when none), refused before any work when it is no seed."""
    seed = synset.meta.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ArtifactError(f"{path} records the seed {seed!r}, not an integer from 0 to 2**63 - 1; pass --seed N "
                            "to choose one")
    return seed
