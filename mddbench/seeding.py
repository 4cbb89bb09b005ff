"""Seeds derived by name, so that every random stream of a run is fixed by one ``--seed``.

``derive_seed(seed, "eval", 3)`` gives the stream of evaluation model 3; streams with different
names are independent, and adding a stream never shifts another (unlike drawing from one RNG).
"""
from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))
