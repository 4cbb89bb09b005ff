"""Ids derived from what determines a thing (a job, a record, an expert buffer, a privacy result), so
every machine and every rerun agrees on them. No torch here: the stores and leaderboards import it."""
from __future__ import annotations

import hashlib
import json


def identity_digest(identity: object, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``identity`` as sorted-key JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:length]
