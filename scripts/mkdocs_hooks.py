"""MkDocs hooks (mkdocs.yml ``hooks:``): the site is the repository's own markdown, links as they read on GitHub.

The site's pages are ``docs/`` plus a few files that live elsewhere in the repository so that GitHub shows
them where a reader looks: the README (the site's home page), CONTRIBUTING.md, CHANGELOG.md, LICENSE and
``leaderboards/`` (its README, tables and figures). Every link is written as a repository path relative
to the file it is in (``../leaderboards/README.md`` from ``docs/``, ``docs/methods.md`` from the README),
so it works on GitHub; ``on_page_markdown`` rewrites it to the page's place in the site. A link to a file
that is not part of the site is left as it is, so ``mkdocs build --strict`` fails on it as on any
dangling link (tests/test_docs.py).
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
# repository path -> the page's path in the site (``docs/X`` is ``X``)
MOVED = {"README.md": "index.md", "CONTRIBUTING.md": "contributing.md", "CHANGELOG.md": "changelog.md",
         "LICENSE": "LICENSE.txt"}
FOLDERS = ("leaderboards",)  # served under their own name, every file in them
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def site_path(repo_path: str) -> str | None:
    """Where a repository file is in the site, or None when it is not part of it."""
    if repo_path in MOVED:
        return MOVED[repo_path]
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/"):]
    if repo_path.split("/", 1)[0] in FOLDERS:
        return repo_path
    return None


def repo_path(site: str) -> str:
    back = {v: k for k, v in MOVED.items()}
    if site in back:
        return back[site]
    return site if site.split("/", 1)[0] in FOLDERS else "docs/" + site


def rewrite_links(markdown: str, page_site_path: str) -> str:
    """Every relative link of a page, written as a repository path, rewritten to the site's layout."""
    here = posixpath.dirname(repo_path(page_site_path))
    page_dir = posixpath.dirname(page_site_path)

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^([a-z]+:|#|/)", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        site = site_path(posixpath.normpath(posixpath.join(here, path)))
        if site is None:
            return m.group(0)  # not part of the site: left dangling, so --strict names it
        new = posixpath.relpath(site, page_dir or ".")
        return m.group(1) + new + ("#" + anchor if anchor else "") + m.group(3)

    return LINK.sub(fix, markdown)


def on_files(files: Files, config) -> Files:
    for repo, site in MOVED.items():
        files.append(File.generated(config, site, abs_src_path=str(ROOT / repo)))
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file():
                files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    return rewrite_links(markdown, page.file.src_uri)
