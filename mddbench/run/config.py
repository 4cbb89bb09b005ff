"""Config files of a run or a sweep: a TOML file, or a run folder's ``job.json`` (issue 46 item 7).

``mddbench run --config FILE`` and ``mddbench sweep --config FILE`` read one; the command line
(:func:`mddbench.cli.apply_config`) checks its keys and values as options and lets an option given
there win. ``job.json`` (written by :func:`mddbench.run.job.write_job_file`) holds every field of a
:class:`~mddbench.run.job.Job`, so ``mddbench run --config RUN/job.json`` makes that job again, with its
job id. The format is told by the suffix: ``.json`` is JSON, anything else TOML; a folder means its job.json.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from mddbench.errors import ConfigError


def read_config(path: str | Path) -> dict[str, Any]:
    """The table a config file holds (a ConfigError that names the file when it is missing or malformed)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "job.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc}); name a TOML file or a run "
                          f"folder's job.json") from exc
    kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
    try:
        values = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config {path} is not valid {kind} ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a table of options (key = value), got {type(values).__name__}")
    return values
