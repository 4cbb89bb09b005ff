"""The documentation builds with no dangling link, and every page the code cites exists.

``mkdocs build --strict`` (mkdocs.yml, scripts/mkdocs_hooks.py) fails on a link to a missing page or
anchor; the citations test reads the docstrings and comments of the code for ``docs/....md`` (and
``leaderboards/README.md``) paths, their section numbers and their quoted section titles.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITING = [ROOT / "setup.cfg", *[p for folder in ("mddbench", "methods", "datasets", "scripts", "benchmarks", "tests")
                                for p in sorted((ROOT / folder).rglob("*")) if p.suffix in (".py", ".sh")]]
PAGE = re.compile(r"\b((?:docs/\w[\w./-]*|leaderboards/README)\.md)\b")
SECTION = re.compile(r"\bdocs/methods\.md (\d+\.\d+)")
TITLE = re.compile(r"\b((?:docs/\w[\w./-]*|leaderboards/README)\.md),? \"([^\"]+)\"")


def hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def citations(pattern: re.Pattern) -> list[tuple[str, tuple[str, ...]]]:
    return [(f"{path.relative_to(ROOT)}", m.groups()) for path in CITING for m in pattern.finditer(path.read_text())]


def test_mkdocs_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[test]') installs mkdocs")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "site"
    for page in ("index.html", "leaderboards/index.html", "methods/index.html", "contributing/index.html"):
        assert (site / page).is_file(), page
    home = (site / "index.html").read_text()
    assert 'href="usage/"' in home and 'href="leaderboards/"' in home  # the README's links, rewritten for the site
    assert (site / "leaderboards" / "figures" / "ptm_retinamnist_ipc10.png").is_file()


def test_every_cited_page_exists():
    cited = citations(PAGE)
    assert ("methods/mtt.py", ("docs/methods.md",)) in cited  # the pattern finds what it is for
    missing = sorted({(where, path) for where, (path,) in cited if not (ROOT / path).is_file()})
    assert not missing, missing


def test_every_cited_method_section_is_in_the_methods_page():
    sections = set(re.findall(r"^\| (\d+\.\d+) \|", (ROOT / "docs" / "methods.md").read_text(), re.M))
    cited = citations(SECTION)
    assert cited and not [(where, s) for where, (s,) in cited if s not in sections]


def test_every_cited_section_title_is_a_heading_of_its_page():
    cited = citations(TITLE)
    assert any(path == "docs/methods.md" for _, (path, _) in cited)
    for where, (path, title) in cited:
        headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.M)
        assert any(h.startswith(title) for h in headings), f"{where} cites {path} {title!r}; its headings: {headings}"


def test_repository_links_are_rewritten_to_the_site():
    rewrite = hooks().rewrite_links
    assert rewrite("[r](../leaderboards/README.md#x)", "usage.md") == "[r](leaderboards/README.md#x)"
    assert rewrite("[m](docs/methods.md) [l](LICENSE)", "index.md") == "[m](methods.md) [l](LICENSE.txt)"
    assert rewrite("[p](../docs/protocol.md#v) ![f](figures/a.png)", "leaderboards/README.md") == (
        "[p](../protocol.md#v) ![f](figures/a.png)")
    assert rewrite("[c](../CONTRIBUTING.md)", "adding-a-method.md") == "[c](contributing.md)"
    # a file that is not part of the site stays as written, so --strict names it as dangling
    assert rewrite("[x](../mddbench/cli.py) [w](https://example.org) [a](#here)", "usage.md") == (
        "[x](../mddbench/cli.py) [w](https://example.org) [a](#here)")
