"""The README stays true: every command in it runs (or, where it needs GPUs or a cluster, parses) as written.

Its bash blocks are read as they stand. The quick start's commands run in order in one empty folder, on
the genuine MedMNIST file (from ``$MDDBENCH_TEST_DATA``, offline), and must end in a rendered
leaderboard; the plugin example runs by the command its own first line gives; the sweeps that need GPUs
or a Ray cluster parse with the real parser, so a renamed option fails here.
"""
from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, skip_without_data

from mddbench.cli import build_parser, main
from mddbench.results.store import ResultStore, artifact_path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def section(title: str) -> str:
    """The README's text from the heading ``## title...`` to the next ``## ``."""
    m = re.search(rf"^## {re.escape(title)}.*?(?=^## |\Z)", README.read_text(), re.S | re.M)
    assert m, f"README has no section '## {title}'"
    return m.group(0)


def commands(text: str) -> list[str]:
    """Every command line of the bash blocks in ``text`` (continuations joined, comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def mddbench_args(line: str, cwd: Path | None = None) -> list[str]:
    words = shlex.split(line)
    assert words[0] == "mddbench", line
    if cwd is None:
        return words[1:]
    expanded = []
    for w in words[1:]:  # the shell's glob, relative to the folder the commands run in
        hits = sorted(glob.glob(w, root_dir=cwd)) if any(c in w for c in "*?[") else [w]
        assert hits, f"{w} matches nothing in {cwd}"
        expanded += hits
    return expanded


def test_readme_sections_come_in_the_issue_46_order():
    heads = re.findall(r"^## (.+)$", README.read_text(), re.M)
    order = ["Install", "Quick start", "Test", "Commands", "Add a method", "Many GPUs and Ray", "Where things are",
             "Results", "Citation and license"]
    assert [next(h for h in heads if h.startswith(o)) for o in order] == [h for h in heads if
                                                                         any(h.startswith(o) for o in order)]
    assert len(README.read_text().splitlines()) <= 200


@pytest.mark.slow
def test_quick_start_runs_as_written_and_ends_in_a_leaderboard(tmp_path, monkeypatch, capsys):
    skip_without_data("retinamnist.npz")
    lines = commands(section("Quick start"))
    assert lines[0].startswith("mddbench run --method random --dataset retinamnist")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MDDBENCH_DATA", str(SHARED_DATA.resolve()))  # absolute: the test changes folder
    monkeypatch.setenv("MDDBENCH_OFFLINE", "1")
    for line in lines:
        assert main(mddbench_args(line, tmp_path)) == 0, line
    table = (tmp_path / "my_leaderboard" / "main_smoke.md").read_text()
    for method in ("random", "dm"):
        assert re.search(rf"^\| {method} +\| .*\d+\.\d+ ±", table, re.M), (method, table)
    assert list(tmp_path.glob("mddbench_out/runs/ptm_retinamnist_ipc2_s0_smoke_*/synset.png"))


def test_readme_plugin_runs_as_its_first_line_says(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", section("Add a method"), re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith("#")]) <= 16
    command = re.match(r"# nearest_mean\.py\s+-- run with: (mddbench .+)\n", code).group(1)
    (tmp_path / "nearest_mean.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    assert main(mddbench_args(command) + ["--quiet"]) == 0
    (record,) = ResultStore(tmp_path / "mddbench_out" / "results.sqlite").records()
    assert record["method"] == "nearest-mean" and record["ipc"] == 2 and record["budget"] == "smoke"
    from mddbench.api.synset import SyntheticSet

    synset = SyntheticSet.load(artifact_path(record, tmp_path / "mddbench_out"))
    assert synset.images.shape == (8, 1, 28, 28) and torch.equal(synset.labels, torch.arange(4).repeat_interleave(2))


def test_cluster_commands_parse_as_written():
    """The GPU and Ray sweeps cannot run here; the real parser must accept them as they stand."""
    lines = [line for line in commands(section("Many GPUs and Ray")) if line.startswith("mddbench")]
    assert len(lines) == 3
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(mddbench_args(line))
        assert args.command == shlex.split(line)[1]
    assert parser.parse_args(mddbench_args(lines[1])).executor == "ray"


def test_every_readme_command_is_run_or_parsed_by_a_test():
    """A bash line the tests above neither run nor parse would be untested: only pip, ray and pytest may be."""
    tested = set(commands(section("Quick start"))) | set(commands(section("Many GPUs and Ray")))
    for line in commands(README.read_text()):
        assert line in tested or line.split()[0] in ("pip", "ray", "python"), line
    for line in commands(README.read_text()):
        if line.startswith("python "):
            assert line.startswith("python -m pytest -q"), line  # CI's command (.ci/run), and its fast subset


def test_readme_commands_are_real_subcommands():
    text = README.read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    found = set(re.findall(r"^\s*mddbench (\w+)", blocks, re.M)) | set(re.findall(r"`mddbench (\w+)", text))
    known = set(build_parser()._subparsers._group_actions[0].choices)
    assert found and found <= known, found - known
