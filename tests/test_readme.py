"""The README stays true: its plugin example runs as written, and its commands exist."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from mddbench.cli import build_parser, main
from mddbench.results.store import ResultStore, artifact_path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_plugin_runs_verbatim(tmp_path):
    text = README.read_text()
    code = re.search(r"## Add a method.*?```python\n(.*?)```", text, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith("#")]) <= 16
    plugin = tmp_path / "herding.py"
    plugin.write_text(code)
    out = tmp_path / "out"
    assert main(["run", "--plugin", str(plugin), "--method", "herding", "--dataset", "demo", "--ipc", "2",
                 "--budget", "smoke", "--eval-epochs", "2", "--out", str(out), "--quiet"]) == 0
    (record,) = ResultStore(out / "results.sqlite").records()
    assert record["method"] == "herding" and record["ipc"] == 2
    from mddbench.api.synset import SyntheticSet

    synset = SyntheticSet.load(artifact_path(record, out))
    assert synset.images.shape == (8, 1, 28, 28) and torch.equal(synset.labels, torch.arange(4).repeat_interleave(2))


def test_readme_commands_are_real_subcommands():
    text = README.read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    commands = set(re.findall(r"^\s*mddbench (\w+)", blocks, re.M)) | set(re.findall(r"`mddbench (\w+)", text))
    known = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands and commands <= known, commands - known
