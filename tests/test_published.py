"""The published leaderboards are the tool's output for the published records, and leaderboards/README.md
copies them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, skip_without_data

from mddbench.data.class_balance import TEST_CLASS_COUNTS, majority_dominated, majority_share
from mddbench.report.leaderboard import write_leaderboards

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ROOT / "leaderboards"


def published_records() -> list[dict]:
    return [json.loads(line) for line in (BOARDS / "records.jsonl").read_text().splitlines() if line.strip()]


def published_privacy() -> list[dict]:
    from mddbench.results.privacy_store import read_privacy_jsonl

    path = BOARDS / "privacy.jsonl"
    return read_privacy_jsonl(path) if path.is_file() else []


def test_committed_leaderboards_regenerate_byte_identically(tmp_path):
    from mddbench.results.failures import failures_of

    written = {p.name: p for p in write_leaderboards(published_records(), tmp_path, privacy=published_privacy(),
                                                     failures=failures_of(BOARDS / "records.jsonl"))}
    committed = {p.name for p in BOARDS.iterdir() if p.suffix in (".md", ".csv") and p.name != "README.md"}
    assert set(written) == committed, "regenerate with `mddbench publish --records leaderboards/records.jsonl`"
    for name, path in written.items():
        assert path.read_bytes() == (BOARDS / name).read_bytes(), (
            f"leaderboards/{name} is not what `mddbench publish --records leaderboards/records.jsonl` writes")


@pytest.mark.parametrize("block, source", [
    ("retina table", "main_quick_v3.md"), ("retina balanced table", "main_quick_v3_balanced_acc.md"),
    ("retina privacy table", "privacy_quick_v3.md"), ("main table", "main_quick.md"),
    ("variants table", "variants_quick.md"), ("retina variants table", "variants_quick_v3_balanced_acc.md"),
    ("3d table", "main_quick_v4_3d.md"), ("retina ipc10 table", "main_quick_v4.md"),
    ("retina ipc10 balanced table", "main_quick_v4_balanced_acc.md"),
    ("retina ipc10 privacy table", "privacy_quick_v4.md"), ("retina ipc10 variants table", "variants_quick_v4.md"),
    ("retina ipc10 balanced variants table", "variants_quick_v4_balanced_acc.md"),
    ("breast table", "main_quick_v4.md"), ("breast privacy table", "privacy_quick_v4.md"), ("pneumonia privacy table", "privacy_quick_v4.md"),
    ("pneumonia table", "main_quick_v4.md"), ("pneumonia variants table", "variants_quick_v4.md")])
def test_leaderboard_readme_tables_are_copies_of_the_leaderboards(block, source):
    readme = (BOARDS / "README.md").read_text()
    m = re.search(rf"(<!-- {block}: copied from leaderboards/{source}.*?-->)(.*?)<!-- end of {block} -->", readme, re.S)
    script = load_script("readme_tables")
    assert script.table_lines(m.group(2)) == script.table_lines((BOARDS / source).read_text(),
                                                                **script.block_selection(m.group(1)))


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_copy_is_current():
    """`python scripts/readme_tables.py --check` passes: no block of any page (listed above or not) is stale."""
    script = load_script("readme_tables")
    pages = script.default_pages(ROOT)
    assert BOARDS / "README.md" in pages
    for page in pages:
        _, stale = script.refresh(page.read_text(), BOARDS)
        assert stale == [], f"{page}: run `python scripts/readme_tables.py` after `mddbench leaderboard`"
    assert script.main(["--check"]) == 0


def test_readme_tables_replaces_the_table_and_keeps_the_prose(tmp_path):
    (tmp_path / "t.md").write_text("# Title\n\nprose of the file\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    readme = ("intro\n<!-- t table: copied from leaderboards/t.md by the command below; do not edit -->\n\n"
              "Our caption:\n\n| a | b |\n|---|---|\n| 9 | 9 |\n<!-- end of t table -->\nrest\n")
    new, changed = load_script("readme_tables").refresh(readme, tmp_path)
    assert changed == ["t table"]
    assert new == readme.replace("| 9 | 9 |", "| 1 | 2 |")
    assert load_script("readme_tables").refresh(new, tmp_path)[1] == []  # a second run changes nothing
    with pytest.raises(SystemExit, match="does not exist"):
        load_script("readme_tables").refresh(readme.replace("t.md", "gone.md"), tmp_path)


def test_a_block_can_copy_some_columns_of_a_table(tmp_path):
    (tmp_path / "t.md").write_text("| method | a ipc1 | b ipc1 | a ipc2 |\n|:--|:--|:--|:--|\n"
                                   "| dm | 1 | 2 | 3 |\n| mtt |  | 5 |  |\n")
    readme = ("<!-- t table: copied from leaderboards/t.md columns=a by the command below -->\n"
              "| old |\n<!-- end of t table -->\n")
    new, changed = load_script("readme_tables").refresh(readme, tmp_path)
    assert changed == ["t table"]
    assert new.splitlines()[1:-1] == ["| method | a ipc1 | a ipc2 |", "|:--|:--|:--|", "| dm | 1 | 3 |"]
    assert "| b ipc1 |" in load_script("readme_tables").refresh(readme.replace("=a", "=b"), tmp_path)[0]
    with pytest.raises(SystemExit, match="no column's header starts with c"):
        load_script("readme_tables").refresh(readme.replace("=a", "=c"), tmp_path)
    table = load_script("readme_tables").table_lines
    wide = "| m | a ipc1 | ab ipc1 | a ipc2 |\n|:--|:--|:--|:--|\n| dm | 1 \\| x | 2 | 3 |\n"
    assert table(wide, "a") == ["| m | a ipc1 | a ipc2 |", "|:--|:--|:--|", "| dm | 1 \\| x | 3 |"]  # not ab's
    with pytest.raises(SystemExit, match="names nothing"):
        table(wide, ",")
    by_row = "| dataset | x |\n|:--|:--|\n| a | 1 |\n| ab | 2 |\n| a | 3 |\n"
    assert table(by_row, rows="a") == ["| dataset | x |", "|:--|:--|", "| a | 1 |", "| a | 3 |"]
    assert table(by_row, rows="ab,a") == by_row.splitlines()
    with pytest.raises(SystemExit, match="another number of cells"):
        table(wide + "| mtt | 1 |\n", "a")


def test_majority_shares():
    assert majority_share("breastmnist") == pytest.approx(114 / 156)
    assert majority_dominated("breastmnist") and majority_dominated("pneumoniamnist")
    assert not majority_dominated("retinamnist") and majority_share("pathmnist") is None


@pytest.mark.parametrize("dataset", sorted(TEST_CLASS_COUNTS))
def test_class_counts_match_the_data(dataset):
    path = SHARED_DATA / f"{dataset}.npz"
    skip_without_data(path.name)
    labels = np.load(path)["test_labels"].ravel()
    assert tuple(np.bincount(labels).tolist()) == TEST_CLASS_COUNTS[dataset]
