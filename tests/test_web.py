"""The web leaderboard (mddbench/report/web.py) in a real headless Chromium: it loads without a console error,
sorting a column sorts its numbers, every thumbnail loads, and every number shown is the CSV's.

The browser is Debian's ``chromium`` with ``chromium-driver`` (`.ci/run` installs both), driven by selenium.
Without them these tests fail, saying how to install them; ``MDDBENCH_SKIP_BROWSER=1`` skips the browser tests
instead (an explicit opt-out, so that CI cannot skip them silently).
"""
from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import get_spec
from mddbench.report.leaderboard import write_leaderboards
from mddbench.report.thumbnails import DIFFERS, NOT_PUBLISHED, PER_CLASS, PIXELS, TILE, grid
from mddbench.report.web import write_web

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ROOT / "leaderboards"
SKIP_BROWSER = "MDDBENCH_SKIP_BROWSER"
INSTALL = ("the web leaderboard tests need Debian's chromium and chromium-driver and selenium: "
           "`apt-get install -y chromium chromium-driver` and `pip install -e '.[test]' -c constraints.txt` "
           f"(.ci/run does both); set {SKIP_BROWSER}=1 to skip them knowingly")


# --- a tiny store with real set files -------------------------------------------------------

def save_set(root: Path, name: str, dataset: str, ipc: int, seed: int) -> tuple[str, str]:
    """A random set of ``dataset``'s shape saved as a run would save it; (artifact relative to root, sha256)."""
    spec = get_spec(dataset)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(spec.n_classes).repeat_interleave(ipc)
    images = torch.randn((len(labels), *spec.shape), generator=g)
    channels = spec.shape[0]
    meta = {"dataset": dataset, "ipc": ipc, "method": name,
            "normalisation": {"mean": [0.5] * channels, "std": [0.25] * channels}}
    rel = f"runs/{name}_{dataset}_ipc{ipc}_s{seed}/synset.safetensors"
    (root / rel).parent.mkdir(parents=True)
    SyntheticSet(images, labels, meta=meta).save(root / rel)
    return rel, hashlib.sha256((root / rel).read_bytes()).hexdigest()


_job = iter(range(10**6))


def record(method: str, dataset: str, ipc, acc: list[float], seed: int = 0, artifact: str | None = None,
           sha: str | None = None, balanced: list[float] | None = None) -> dict:
    def stat(v: list[float]) -> dict:
        return {"per_model": v, "mean": sum(v) / len(v), "std": 0.0, "n": len(v), "diverged": 0}
    job = f"job{next(_job):04d}"
    return {"id": f"id-{job}", "job_id": job, "method": method, "dataset": dataset, "ipc": ipc,
            "eval_model": "convnet", "protocol": "v1", "budget": "quick", "budget_version": 4, "seed": seed,
            "label_type": "hard", "resolution": 28, "dims": len(get_spec(dataset).shape) - 1,
            "distill_seconds": 12.5 + seed, "eval_seconds": 3.25, "peak_memory_mb": 100.0, "device": "cpu",
            "git_commit": "0123456789abcdef", "created": "2026-01-01", "eval_config": {"n_models": len(acc),
                                                                                     "epochs": 300},
            "artifact": artifact, "artifact_sha256": sha,
            "metrics": {"test_acc": stat(acc), "val_acc": stat([0.5] * len(acc)), "auc": stat([0.5] * len(acc)),
                        "balanced_acc": stat(balanced or acc)}}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Records of a tiny store (its set files beside it, one missing, one edited since), the page written from
    them and the CSV tables written from the same records."""
    store = tmp_path_factory.mktemp("store")
    recs = []
    for method, accs in (("random", [[0.30, 0.34], [0.32, 0.30]]), ("dc", [[0.61, 0.63], [0.60, 0.66]]),
                         ("dm", [[0.50, 0.52], [0.51, 0.52]])):
        for seed, acc in enumerate(accs):
            recs.append(record(method, "pathmnist", 2, acc, seed, *save_set(store, method, "pathmnist", 2, seed)))
    recs.append(record("dm", "pathmnist", 10, [0.70, 0.72], 0, *save_set(store, "dm", "pathmnist", 10, 0)))
    for seed, acc in enumerate(([0.58, 0.57], [0.56, 0.57])):  # sets that were never copied here
        recs.append(record("dsa", "pathmnist", 2, acc, seed, f"runs/never_copied_{seed}/synset.safetensors", "ab" * 32))
    edited, sha = save_set(store, "dsa", "pathmnist", 10, 0)
    (store / edited).write_bytes((store / edited).read_bytes() + b" ")  # the file is no longer the one scored
    recs.append(record("dsa", "pathmnist", 10, [0.66, 0.64], 0, edited, sha))
    recs.append(record("real", "pathmnist", "full", [0.90, 0.91]))
    recs.append(record("dm", "organmnist3d", 1, [0.40, 0.44], 0, *save_set(store, "dm", "organmnist3d", 1, 0)))
    out, csv = tmp_path_factory.mktemp("web"), tmp_path_factory.mktemp("csv")
    write_web(recs, out, sets_root=store)
    write_leaderboards(recs, csv)
    return out, csv, recs


# --- without a browser ----------------------------------------------------------------------

def test_thumbnails_are_small_grids_of_each_class(site):
    out, _, _ = site
    thumbs = sorted((out / "thumbs").glob("*.png"))
    assert len(thumbs) == 5  # one per cell with a set here (its first seed): random, dc, dm ipc2, dm ipc10, 3D dm
    for path in thumbs:
        assert path.stat().st_size < 10_000, path
    sizes = {Image.open(p).size for p in thumbs}
    # tiles of floor(sqrt(PIXELS / images shown)) px, at most TILE, 1 px apart; classes left to right
    assert PIXELS == 6000 and PER_CLASS == 3
    assert (9 * 19 - 1, 2 * 19 - 1) in sizes  # pathmnist ipc 2: 9 classes of 2 images, 18 px tiles
    assert (9 * 15 - 1, 3 * 15 - 1) in sizes  # ipc 10: PER_CLASS images per class, 14 px tiles
    assert (11 * 24 - 1, 23) in sizes  # organmnist3d ipc 1: one middle slice per class, all 11 classes


def test_thumbnail_shows_what_show_shows(tmp_path):
    """A 3D set's tile is its middle slice, denormalised: a volume bright only in its middle slice shows white."""
    images = torch.full((2, 1, 28, 28, 28), -2.0)  # (x * 0.25 + 0.5) clamps to 0 ...
    images[:, :, 14] = 2.0  # ... and to 1 in the middle slice
    path = tmp_path / "set.safetensors"
    SyntheticSet(images, torch.tensor([0, 1]), meta={"normalisation": {"mean": [0.5], "std": [0.25]}}).save(path)
    image = grid(path)
    assert image.mode == "L" and image.size == (2 * TILE + 1, TILE)  # 2 images: full-size tiles
    pixels = torch.from_numpy(np.array(image))
    assert (pixels[:, :TILE] == 255).all() and (pixels[:, TILE + 1:] == 255).all()


def test_page_needs_no_network_and_says_where_sets_are_missing(site):
    page = (site[0] / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must fetch nothing"
    assert "@import" not in page and "url(" not in page
    # in the accuracy table and in the balanced-accuracy table:
    assert page.count(f'<span class="noset">{NOT_PUBLISHED}</span>') == 2  # dsa ipc2: its sets are not here
    assert page.count(f'<span class="noset">{html.escape(DIFFERS)}</span>') == 2  # dsa ipc10: its set was edited since


def test_cli_writes_the_page_of_a_records_export(tmp_path, capsys):
    from conftest import cli

    rc, out, err = cli(capsys, "web", "--records", BOARDS / "records.jsonl", "--to", tmp_path / "web")
    assert rc == 0, err
    page = (tmp_path / "web" / "index.html").read_text(encoding="utf-8")
    assert "from 662 records" in out or "records ->" in out
    assert 'id="main_quick_v4"' in page and 'id="privacy_quick_v4"' in page and 'id="reported_vs_reproduced"' in page


def test_published_web_page_is_the_tools_output(tmp_path):
    """leaderboards/web/ is generated from leaderboards/records.jsonl, never edited."""
    from mddbench.report.publish import read_records
    from mddbench.results.failures import failures_of
    from mddbench.results.privacy_store import privacy_for_leaderboard

    records = BOARDS / "records.jsonl"
    write_web(read_records(records), tmp_path, privacy_for_leaderboard(tmp_path, str(records)),
              failures_of(records), sets_root=BOARDS)
    assert (tmp_path / "index.html").read_bytes() == (BOARDS / "web" / "index.html").read_bytes(), (
        "leaderboards/web/ is stale: regenerate it with `mddbench web --records leaderboards/records.jsonl "
        "--to leaderboards/web`")


# --- in the browser -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if os.environ.get(SKIP_BROWSER) == "1":
        pytest.skip(f"{SKIP_BROWSER}=1: the browser tests were skipped on purpose")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed: {INSTALL}")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail(f"chromium or chromedriver is not on PATH: {INSTALL}")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


READ_TABLES = """
return Array.from(document.querySelectorAll('table.lb')).map(function(t){
  return {stem: t.dataset.stem,
          head: Array.from(t.tHead.rows[0].cells).map(function(c){ return c.textContent; }),
          rows: Array.from(t.tBodies[0].rows).map(function(r){
            return Array.from(r.cells).map(function(c){ var v = c.querySelector('.v');
                                                        return v ? v.textContent : c.textContent; }); })};
});
"""


@pytest.fixture(scope="module")
def page(browser, site):
    browser.get((site[0] / "index.html").as_uri())
    return browser


def test_page_loads_without_console_errors(page):
    assert page.title == "MDD benchmark leaderboard"
    logs = page.get_log("browser")
    assert not [e for e in logs if e["level"] in ("SEVERE", "WARNING")], logs


def test_numbers_shown_are_the_csvs(page, site):
    _, csv, _ = site
    tables = page.execute_script(READ_TABLES)
    stems = {t["stem"] for t in tables}
    assert stems == {p.stem for p in csv.glob("*.csv")} - {"records"}  # every table the files have
    for t in tables:
        df = pd.read_csv(csv / f"{t['stem']}.csv", dtype=str, keep_default_na=False)
        assert t["head"] == list(df.columns), t["stem"]
        assert t["rows"] == df.values.tolist(), t["stem"]
    main = next(t for t in tables if t["stem"] == "main_quick_v4")
    assert main["rows"][1][:2] == ["dc", "62.50 ± 2.29 (n=4)"]  # (61+63+60+66)/4, std by hand


def test_marks_and_provenance(page):
    best = page.find_elements("css selector", "#main_quick_v4 td.best .v")
    assert [e.text for e in best] == ["62.50 ± 2.29 (n=4)"]  # dc beats dm and random at p < 0.05 over seeds
    dc = page.find_element("css selector", "#main_quick_v4 td.best")
    title = dc.get_attribute("title")
    assert "seeds: 0, 1" in title and "commit: 0123456789ab" in title and "budget: quick_v4" in title
    assert "distillation: 26 s in all (12, 14 s)" in title and "evaluation: 6 s in all (3, 3 s)" in title
    dc.click()
    assert page.find_element("css selector", "#prov pre").text.startswith("seeds: 0, 1")


def test_every_image_loads(page):
    images = page.find_elements("css selector", "img")
    assert len(images) >= 5
    broken = [i.get_attribute("src") for i in images
              if not page.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)]
    assert not broken


def number(text: str) -> float | None:
    match = re.match(r"\s*([-+]?\d+(?:\.\d+)?)", text)
    return float(match.group(1)) if match else None


@pytest.mark.parametrize("column", ["pathmnist ipc2", "pathmnist ipc10"])
def test_clicking_a_header_sorts_by_its_numbers(page, column):
    def read() -> list[tuple[str, float | None]]:
        table = next(t for t in page.execute_script(READ_TABLES) if t["stem"] == "main_quick_v4")
        at = table["head"].index(column)
        return [(row[0], number(row[at])) for row in table["rows"]]

    before = read()
    header = page.find_element("xpath", f"//table[@data-stem='main_quick_v4']//thead//th[text()='{column}']")
    header.click()
    down = read()
    values = [v for _, v in down if v is not None]
    assert values == sorted(values, reverse=True) and len(values) >= 3
    assert [v for _, v in down[len(values):]] == [None] * (len(down) - len(values))  # empty cells last
    assert sorted(down, key=str) == sorted(before, key=str)  # rows move whole
    header.click()
    up = [v for _, v in read() if v is not None]
    assert up == sorted(up)
