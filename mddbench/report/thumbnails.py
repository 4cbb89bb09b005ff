"""Thumbnails of the distilled sets behind leaderboard cells, for the web page (``web.py``).

A record names its set (``artifact``, relative to the folder of the store that holds it) and the set's sha256
(``artifact_sha256``). A thumbnail is drawn only from the very file the record scored: one whose digest differs
is reported, never shown. The grid has one column per class (at most ``MAX_CLASSES``) and up to ``PER_CLASS``
images in each, each image ``TILE`` pixels square, displayed as ``mddbench show`` displays it
(:func:`mddbench.report.show.displayable`: denormalised, 3D volumes by their middle slice); a greyscale PNG for
one-channel sets. Tiles shrink (to ``MIN_TILE``) so that a grid holds at most ``PIXELS`` image pixels, and values are
quantised to ``LEVELS`` levels (colours): a grid stays under 10 KB even for a set of pure noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mddbench.api.synset import SyntheticSet
from mddbench.atomic import replacing
from mddbench.errors import MddError
from mddbench.report.show import displayable
from mddbench.results.store import artifact_path
from mddbench.run.record import file_digest

PER_CLASS = 3
MAX_CLASSES = 12
TILE = 28  # the largest tile; grids of many images get smaller ones (``PIXELS``)
MIN_TILE = 14
PIXELS = 6000  # the most image pixels in a grid: with 32 levels, a few KB even for a set of pure noise
LEVELS = 32
GAP = 1

# what a cell shows instead of a thumbnail, by the reason it has none
NOT_PUBLISHED = "set not published"
DIFFERS = "set file differs from the record's"
UNREADABLE = "set unreadable"
NO_SET = "no set recorded"


@dataclass(frozen=True)
class SetFile:
    """The set of one record on this machine: ``path`` when the file is there and is the one the record
    scored (its sha256 matches, or the record has none), else ``missing`` says why not."""
    record: dict[str, Any]
    path: Path | None
    missing: str = ""


class SetFiles:
    """Finds records' sets under ``root`` (the folder their store was in), each file's digest computed once."""

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root)
        self._digests: dict[Path, str] = {}

    def find(self, record: dict[str, Any]) -> SetFile:
        if not record.get("artifact"):
            return SetFile(record, None, NO_SET)
        path = artifact_path(record, self.root) if self.root is not None or Path(record["artifact"]).is_absolute() \
            else None
        if path is None or not path.is_file():
            return SetFile(record, None, NOT_PUBLISHED)
        want = record.get("artifact_sha256")
        if want:
            if path not in self._digests:
                self._digests[path] = file_digest(path)
            if self._digests[path] != want:
                return SetFile(record, None, DIFFERS)
        return SetFile(record, path)


def grid(path: str | Path) -> Image.Image:
    """The thumbnail grid of the set at ``path``: classes left to right, up to ``PER_CLASS`` images each."""
    synset = SyntheticSet.load(path)
    labels = synset.hard_labels()
    classes = sorted({int(c) for c in labels.tolist()})[:MAX_CLASSES]
    rows = max(1, min(PER_CLASS, max(int((labels == c).sum()) for c in classes)))
    size = max(MIN_TILE, min(TILE, int((PIXELS / (rows * len(classes))) ** 0.5)))
    x = displayable(synset.images, synset.meta)  # (N, H, W, C) in [0, 1]
    x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), size=(size, size), mode="area").permute(0, 2, 3, 1)
    step = 255 / (LEVELS - 1)
    x = ((x.clamp(0, 1) * (LEVELS - 1)).round() * step).round().to(torch.uint8).numpy()
    channels = x.shape[-1] if x.shape[-1] == 3 else 1
    canvas = np.full((rows * (size + GAP) - GAP, len(classes) * (size + GAP) - GAP, channels), 255, np.uint8)
    for j, c in enumerate(classes):
        for i, index in enumerate(torch.nonzero(labels == c).flatten()[:rows].tolist()):
            tile = x[index] if channels == 3 else x[index][..., :1]
            canvas[i * (size + GAP):i * (size + GAP) + size, j * (size + GAP):j * (size + GAP) + size] = tile
    return Image.fromarray(canvas[..., 0] if channels == 1 else canvas, "L" if channels == 1 else "RGB")


def write_thumbnail(path: str | Path, out: str | Path) -> Path | str:
    """Write the grid of the set at ``path`` to ``out`` (PNG); on a set that cannot be read, the reason
    (``UNREADABLE`` and what failed) instead of a path."""
    try:
        image = grid(path)
    except (MddError, OSError, ValueError, RuntimeError, KeyError) as exc:
        return f"{UNREADABLE}: {exc}"
    out = Path(out)
    with replacing(out) as tmp:
        if image.mode == "RGB":  # at most LEVELS colours: a palette image, a third of the bytes
            image = image.quantize(LEVELS, method=Image.Quantize.MEDIANCUT)
        image.save(tmp, format="PNG", optimize=True)
    return out
