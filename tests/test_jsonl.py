"""The three exports (records, privacy results, failures) are read by one reader: a bad line is named by its
file and number, says what it is not, and how to repair it, whichever export it is in."""
from __future__ import annotations

import json

import pytest

from mddbench.errors import ConfigError
from mddbench.report.publish import read_records
from mddbench.results.failures import FAILURES
from mddbench.results.kind import read_export
from mddbench.results.merge import read_source
from mddbench.results.privacy_store import read_privacy_jsonl
from mddbench.results.store import ResultStore

METRIC = {"per_model": [0.5], "mean": 0.5, "std": 0.0, "n": 1}
RECORD = {"job_id": "j1", "method": "random", "dataset": "demo", "ipc": 1, "eval_model": "convnet", "protocol": "v1",
          "budget": "smoke", "seed": 0, "metrics": {k: METRIC for k in ("test_acc", "val_acc", "auc", "balanced_acc")}}
PRIVACY = {"id": "p1", "privacy_version": "privacy-v1", "job_id": "j1", "eval_record_id": None, "method": "random",
           "dataset": "demo", "ipc": 1, "seed": 0, "budget": "smoke", "memorisation": {}, "membership": {}}
FAILURE = {"id": "j2", "job_id": "j2", "method": "mtt", "dataset": "demo", "ipc": 1, "eval_models": ["convnet"],
           "protocol": "v1", "budget": "smoke", "seed": 0, "reason": "distillation diverged"}

READERS = [(read_records, RECORD, "result record"), (read_privacy_jsonl, PRIVACY, "privacy result"),
           (lambda path: read_export(path, FAILURES), FAILURE, "failure"),
           (lambda path: ResultStore(path.with_suffix(".sqlite")).import_jsonl(path), RECORD, "result record")]


@pytest.mark.parametrize("reader, good, what", READERS)
@pytest.mark.parametrize("bad, says", [("{not json", "Expecting property name"), ("[1, 2]", "must be a dict, got list"),
                                       ('{"id": "x"}', "missing required field(s)")])
def test_a_bad_line_of_any_export_is_named_with_its_repair(tmp_path, reader, good, what, bad, says):
    path = tmp_path / "export.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + bad + "\n")
    with pytest.raises(ConfigError) as info:
        reader(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: not a {what} (")  # line 3: the blank line 2 is counted, then skipped
    assert says in message and f"`git checkout {path}`" in message


@pytest.mark.parametrize("reader, good, what", READERS[:3])
def test_every_valid_line_is_read_blank_ones_skipped(tmp_path, reader, good, what):
    path = tmp_path / "export.jsonl"
    second = {**good, "id": "x2", "job_id": "x2"}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(second) + "\n")
    assert reader(path) == [good, second]


def test_merge_names_the_bad_line_and_merges_nothing(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps({**RECORD, "seed": "zero"}) + "\n")
    with pytest.raises(ConfigError, match=r"records\.jsonl:2: not a result record \(invalid result record: seed must "
                                          r"be an int, got 'zero'\).*; nothing was merged$"):
        read_source(path)
