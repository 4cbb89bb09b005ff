"""``mddbench verify``: a merged record is believed only when its own set reproduces it (issue 43, item 1).

For each record checked (:func:`verify_store`): its set must be present at the record's ``artifact`` (taken
from the store's folder, as :func:`mddbench.results.store.artifact_path` reads it), its sha256 must be the
record's ``artifact_sha256``, and evaluating it again through the one evaluation path
(:func:`mddbench.evaluation.protocol.evaluate`, with the data loaded as ``mddbench eval`` loads it,
:func:`mddbench.api.saved.load_with_data`) with the record's own ``eval_config`` and evaluation seed must
give every per-model value of every metric within ``tolerance``. What was found is stored in the record
(:meth:`mddbench.results.store.ResultStore.set_verified`; the states are
:mod:`mddbench.results.verification`'s). Records made in this store are trusted by construction and are
not re-evaluated.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from mddbench import __version__
from mddbench.api.saved import load_with_data
from mddbench.errors import ArtifactError, ConfigError, DataError
from mddbench.evaluation.protocol import EvalConfig, evaluate
from mddbench.results import verification as v
from mddbench.results.store import METRIC_NAMES, ResultStore, artifact_path
from mddbench.run.job import resolve_device
from mddbench.run.record import file_digest, git_commit

DEFAULT_TOLERANCE = 1e-6  # on per-model values (fractions): float rounding, never a changed prediction
Record = dict[str, Any]


@dataclass
class Outcome:
    record: Record
    state: str  # a state of mddbench.results.verification, or ``local`` (made here) or ``skipped``
    detail: str = ""

    def line(self) -> str:
        r = self.record
        what = (f"{r['id']}  {r['method']} {r['dataset']} ipc {r['ipc']} seed {r['seed']} {r['eval_model']} "
                f"{r['budget']}")
        return f"{self.state:<12} {what}" + (f": {self.detail}" if self.detail else "")


def eval_seed(record: Record) -> int:
    """The seed the record's evaluation ran with: an explicit ``eval --seed N`` is in its job id, else its own."""
    found = re.search(r":eval-.*-s(\d+)$", str(record["job_id"]))
    return int(found.group(1)) if found else record["seed"]


def compare(record: Record, summary: dict[str, dict], tolerance: float) -> list[str]:
    """What differs between the record's per-model values and a re-evaluation's, metric by metric."""
    differences = []
    for name in METRIC_NAMES:
        ours, theirs = record["metrics"][name]["per_model"], summary[name]["per_model"]
        if len(ours) != len(theirs):
            differences.append(f"{name}: {len(ours)} models recorded, {len(theirs)} re-evaluated")
            continue
        for i, (a, b) in enumerate(zip(ours, theirs)):
            a = None if a is None or not math.isfinite(a) else a
            b = None if b is None or not math.isfinite(b) else b
            if (a is None) != (b is None) or (a is not None and abs(a - b) > tolerance):
                differences.append(f"{name} of model {i}: recorded {a}, re-evaluated {b}")
    return differences


def check_record(record: Record, out: Path, data_root: str | None, device: Any, tolerance: float) -> Outcome:
    """Verify one merged record against its set (module docstring); never writes."""
    if not record.get("artifact"):
        return Outcome(record, v.UNVERIFIED, "it names no saved set to re-evaluate (a method that trains on the "
                                             "real data has none)")
    path = artifact_path(record, out)
    if not path.is_file():
        return Outcome(record, v.MISSING_SET, f"no set at {path} (copy the run folder into {out} to verify it)")
    if not record.get("artifact_sha256"):
        return Outcome(record, v.UNVERIFIED, "it records no artifact_sha256, so the set at its path cannot be "
                                             "told from another")
    digest = file_digest(path)
    if digest != record["artifact_sha256"]:
        return Outcome(record, v.SET_DIFFERS, f"{path} has sha256 {digest[:16]}..., the record names "
                                              f"{record['artifact_sha256'][:16]}...")
    synset, data, _ = load_with_data(path, data_root, "verify")
    if record.get("data_checksum") and data.checksum != record["data_checksum"]:
        return Outcome(record, v.MISMATCH, f"the record names data md5 {record['data_checksum']}, the set's data "
                                           f"has {data.checksum}")
    try:
        config = EvalConfig(**record["eval_config"])
    except (TypeError, ConfigError) as exc:
        return Outcome(record, v.MISMATCH, f"its eval_config cannot be evaluated ({exc})")
    if config.model != record["eval_model"]:
        return Outcome(record, v.MISMATCH, f"its eval_config trains {config.model}, its eval_model is "
                                           f"{record['eval_model']}")
    result = evaluate(synset, data, config, seed=eval_seed(record), device=device, progress=False)
    differences = compare(record, result.summary(), tolerance)
    if differences:
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        return Outcome(record, v.MISMATCH, "; ".join(differences[:3]) + more)
    return Outcome(record, v.VERIFIED, f"{config.n_models} model(s) reproduced within {tolerance:g}")


def select(records: list[Record], ids: Iterable[str] = (), sample: int | None = None, seed: int = 0,
           again: bool = False) -> list[Record]:
    """The records to check: those named by ``ids`` (an id or a unique prefix of one), else all; of those,
    a seeded sample of ``sample``; a record already verified only with ``again``."""
    ids = list(ids)
    if ids:
        chosen = []
        for wanted in ids:
            found = [r for r in records if r["id"].startswith(wanted)]
            if len(found) != 1:
                raise ConfigError(f"--id {wanted}: {'no record' if not found else f'{len(found)} records'} of the "
                                  f"store {'has' if not found else 'have'} that id{'' if not found else ' prefix'}; "
                                  f"give a whole id (the `id` field of records.jsonl)")
            chosen += [r for r in found if r not in chosen]
        records = chosen
    if sample is not None:
        if sample < 1:
            raise ConfigError(f"--sample must be at least 1, got {sample}")
        records = random.Random(seed).sample(records, min(sample, len(records)))
    return [r for r in records if again or ids or v.state(r) != v.VERIFIED]


def verify_store(out: str | Path, ids: Iterable[str] = (), sample: int | None = None, seed: int = 0,
                 data_root: str | None = None, device: str = "auto", tolerance: float = DEFAULT_TOLERANCE,
                 again: bool = False, progress: bool = True) -> list[Outcome]:
    """Check the records of the store in ``out`` (:func:`select`), store what each check found, return it all."""
    if not (isinstance(tolerance, float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    store = ResultStore(Path(out) / "results.sqlite", create=False)
    chosen = select(store.records(), ids, sample, seed, again)
    todo = [r for r in chosen if v.state(r) != v.LOCAL]
    if todo:
        store.check_writable()
    outcomes = [Outcome(r, v.LOCAL, "made in this store") for r in chosen if v.state(r) == v.LOCAL]
    torch_device = resolve_device(device) if todo else None
    commit = git_commit()
    for record in tqdm(todo, desc="verify", unit="record", disable=not progress or not todo):
        try:
            outcome = check_record(record, store.path.parent, data_root, torch_device, tolerance)
        except DataError as exc:  # the data is not here: nothing learned about the record
            outcomes.append(Outcome(record, "skipped", str(exc)))
            continue
        except ArtifactError as exc:  # the very file the record names cannot be evaluated
            outcome = Outcome(record, v.MISMATCH, f"its set cannot be evaluated ({exc})")
        store.set_verified(record["id"], {
            "state": outcome.state, "detail": outcome.detail, "commit": commit, "version": __version__,
            "checked": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        outcomes.append(outcome)
    return outcomes
