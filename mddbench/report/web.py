"""The web leaderboard: one static page (``index.html``, CSS and JavaScript inline, nothing fetched from the
network) and ``thumbs/*.png``, generated from result records like the markdown tables and never edited by hand.

The page holds every table the files hold (:func:`mddbench.report.leaderboard.leaderboard_tables`, then
:func:`mddbench.report.privacy_leaderboard.privacy_tables`), in the same order and with the same numbers: a cell
shows the CSV's text, the markdown's significance mark (bold: significantly best; ``≈``: tied with the best) and
95 % interval, and a thumbnail of its distilled set (:mod:`mddbench.report.thumbnails`; a placeholder that says
why where the set file is not here). Each privacy table has the accuracy of the same cell beside its figures.
Hovering a cell shows its provenance (seeds, budget, protocol, commit, distillation and evaluation seconds,
devices, records, set files); clicking pins it in a panel. Clicking a column header sorts the rows by it.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from mddbench.api.budgets import budget_label
from mddbench.atomic import write_text
from mddbench.errors import ConfigError
from mddbench.report.cells import TIE, Cell, Record, cell_stat, count
from mddbench.report.keys import REAL, row_key, row_label
from mddbench.report.leaderboard import PAPER_RESULTS, leaderboard_tables
from mddbench.report.markdown import devices
from mddbench.report.privacy_leaderboard import privacy_tables
from mddbench.report.significance import ALPHA, LEVEL
from mddbench.report.table import Table
from mddbench.report.thumbnails import NOT_PUBLISHED, SetFile, SetFiles, write_thumbnail
from mddbench.results.verification import untrusted

PAGE = "index.html"
THUMBS = "thumbs"
ACCURACY_BESIDE = {"test acc (same cell)": "test_acc", "bal. acc (same cell)": "balanced_acc"}
LEADING_NUMBER = re.compile(r"^\s*(?:≈\s*)?([-+]?\d+(?:\.\d+)?)")


# --- cells ----------------------------------------------------------------------------------

def _seconds(values: Sequence[Any]) -> str:
    known = [float(v) for v in values if isinstance(v, (int, float))]
    if not known:
        return "not recorded"
    each = ", ".join(f"{v:.0f}" for v in known)
    return f"{sum(known):.0f} s in all ({each} s)" if len(known) > 1 else f"{known[0]:.0f} s"


def provenance(cell: Cell, sets: Sequence[SetFile]) -> str:
    """What a cell pools, line by line: seeds, budget, commit, cost (distill and eval seconds), devices,
    records, set files, and the runs its failures took."""
    recs = sorted((r for r in cell.records if "metrics" in r), key=lambda r: str(r.get("seed")))
    failed = [r for r in cell.records if "metrics" not in r]
    lines = []
    if recs:
        eval_cfg = sorted({f"{(r.get('eval_config') or {}).get('n_models', '?')} models x "
                           f"{(r.get('eval_config') or {}).get('epochs', '?')} epochs" for r in recs})
        lines += [
            f"seeds: {', '.join(str(r.get('seed')) for r in recs)}",
            f"budget: {', '.join(sorted({budget_label(r) for r in recs}))}, protocol "
            f"{', '.join(sorted({str(r.get('protocol')) for r in recs}))}; evaluation: {', '.join(eval_cfg)}",
            f"commit: {', '.join(sorted({str(r.get('git_commit') or 'not recorded')[:12] for r in recs}))}",
            f"distillation: {_seconds([r.get('distill_seconds') for r in recs])}",
            f"evaluation: {_seconds([r.get('eval_seconds') for r in recs])}",
            f"device: {devices(recs)}",
            f"records: {', '.join(str(r.get('id') or r.get('job_id')) for r in recs)}",
        ]
    for s in sets:
        where = s.record.get("artifact") or "-"
        digest = (s.record.get("artifact_sha256") or "")[:12]
        lines.append(f"set (seed {s.record.get('seed')}): {where}" + (f" sha256 {digest}" if digest else "")
                     + (f" - {s.missing}" if s.missing else ""))
    if failed:
        lines.append(f"diverged in distillation (failures.jsonl): {count(len(failed), 'run')}, seeds "
                     f"{', '.join(str(f.get('seed')) for f in failed)}")
    return "\n".join(lines)


class Renderer:
    """Renders cells to HTML, writing each set's thumbnail once (``thumbs/<sha256 prefix>.png``)."""

    def __init__(self, out: Path, sets: SetFiles):
        self.out, self.sets = out, sets
        self.provenance: dict[str, str] = {}
        self.thumbs: dict[str, str] = {}  # file key -> relative path or the reason there is none

    def _thumb(self, cell: Cell) -> tuple[str, list[SetFile]]:
        """The cell's thumbnail (the set of its first seed whose file is here), or a placeholder saying why there
        is none; and every seed's set file, for the provenance."""
        recs = sorted((r for r in cell.records if "metrics" in r), key=lambda r: str(r.get("seed")))
        found = [self.sets.find(r) for r in recs]
        for i, s in enumerate(found):
            if s.path is None:
                continue
            key = s.record.get("artifact_sha256") or hashlib.sha256(str(s.path.resolve()).encode()).hexdigest()
            if key not in self.thumbs:
                made = write_thumbnail(s.path, self.out / THUMBS / f"{key[:16]}.png")
                self.thumbs[key] = f"{THUMBS}/{key[:16]}.png" if isinstance(made, Path) else f"!{made}"
            if self.thumbs[key].startswith("!"):
                found[i] = replace(s, path=None, missing=self.thumbs[key][1:])
                continue
            alt = f"the distilled set of seed {s.record.get('seed')} (a few images per class)"
            return (f'<img class="thumb" src="{html.escape(self.thumbs[key])}" alt="{html.escape(alt)}" '
                    f'title="{html.escape(alt)}">'), found
        if not recs or all(r.get("ipc") == "full" for r in recs):
            return "", found  # `real` (the full training set) or a cell only failures hold: no set to show
        why = next((s.missing for s in found if s.missing), NOT_PUBLISHED)
        return f'<span class="noset">{html.escape(why.split(":")[0])}</span>', found

    def cell(self, cell: Cell) -> str:
        if cell.stat is None:
            return '<td data-sort=""></td>'
        stat = cell.stat
        value = round(stat.mean, 2) if stat.n and math.isfinite(stat.mean) else None
        classes = ["best"] if cell.best else ["tie"] if cell.tie else []
        mark = f'<span class="mark" title="tied with the column\'s best">{TIE}</span>&nbsp;' if cell.tie else ""
        ci = stat.interval
        extra = (f"[{ci[0]:.1f}, {ci[1]:.1f}] · " if ci else "") + count(len(stat.seeds), "seed") if stat.n else ""
        thumb, found = self._thumb(cell)
        text = provenance(cell, found)
        key = hashlib.sha1(text.encode()).hexdigest()[:10]
        self.provenance[key] = text
        return (f'<td data-sort="{"" if value is None else value}" data-p="{key}"'
                + (f' class="{" ".join(classes)}"' if classes else "") + ">"
                + f'{mark}<span class="v">{html.escape(cell.text())}</span>'
                + (f'<span class="ci">{html.escape(extra)}</span>' if extra else "") + thumb + "</td>")


def _text_cell(value: Any) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    number = LEADING_NUMBER.match(text)
    return f'<td data-sort="{number.group(1) if number else ""}"><span class="v">{html.escape(text)}</span></td>'


# --- privacy beside accuracy ----------------------------------------------------------------

def _with_accuracy(table: Table, records: Sequence[Record]) -> pd.DataFrame:
    """A privacy table with the accuracy cells of the same (dataset, ipc, network, method) and budget beside it:
    test and balanced accuracy pooled over all the cell's seeds, as the accuracy tables pool them."""
    df = table.frame("csv").copy()
    budgets = {budget_label(r) for r in table.records}
    protocols = {r["config"]["target"].get("protocol") for r in table.records if r.get("config")}
    groups: dict[tuple[str, str, str, str], list[Record]] = defaultdict(list)
    for r in records:
        if budget_label(r) in budgets and (not protocols or r["protocol"] in protocols):
            label = row_label(row_key(r))
            groups[(r["dataset"], str(r["ipc"]), r["eval_model"],
                    f"{REAL} (reference)" if label == REAL else label)].append(r)
    at = list(df.columns).index("seeds") + 1
    for offset, (name, metric) in enumerate(ACCURACY_BESIDE.items()):
        df.insert(at + offset, name, [
            Cell(cell_stat(recs, metric), records=tuple(recs)) if (recs := groups.get(
                (row.dataset, str(row.ipc), row.eval_model, row.method))) else ""
            for row in df[["dataset", "ipc", "eval_model", "method"]].itertuples(index=False)])
    return df


# --- the page -------------------------------------------------------------------------------

def _inline(text: str) -> str:
    """A note's markdown (`code`, **bold**) as HTML, everything else escaped."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _short(table: Table) -> str:
    """A table's name within its scope: "main", "main 3d balanced acc", "privacy"."""
    stem = table.stem.replace(f"_{table.scope}", "") if table.scope else table.stem
    return stem.replace("_", " ")


def _table_html(table: Table, df: pd.DataFrame, render: Renderer, extra_note: str = "") -> str:
    index = df.index.name is not None
    headers = ([df.index.name] if index else []) + [str(c) for c in df.columns]
    head = "".join(f'<th scope="col" tabindex="0" title="sort by {html.escape(h)}">{html.escape(h)}</th>'
                   for h in headers)
    body = []
    for label, row in zip(df.index, df.itertuples(index=False)):
        cells = [f'<th scope="row" data-sort="{html.escape(str(label))}">{html.escape(str(label))}</th>'] \
            if index else []
        cells += [render.cell(v) if isinstance(v, Cell) else _text_cell(v) for v in row]
        body.append(f"<tr>{''.join(cells)}</tr>")
    notes = [*table.notes, *([extra_note] if extra_note else [])]
    scope = f" · budget {table.scope}" if table.scope else ""
    return (f'<section id="{table.stem}"><h2>{html.escape(table.title)}{html.escape(scope)} '
            f'<small>{table.stem}</small></h2>'
            f'<details><summary>notes ({len(notes)})</summary>{"".join(f"<p>{_inline(n)}</p>" for n in notes)}'
            f'</details><div class="scroll"><table class="lb" data-stem="{table.stem}"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div></section>')


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 1.5em 3em;color:#1d2330}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .3em}h2 small{color:#778;font-weight:normal}
code{background:#f2f3f6;padding:0 .25em;border-radius:3px}
.legend{background:#f7f8fb;border:1px solid #dde;padding:.5em 1em;border-radius:6px}
.legend p{margin:.3em 0}
table.toc{margin:.6em 0;border-collapse:collapse}table.toc th{text-align:left;padding:1px 1em 1px 0}
.scroll{overflow-x:auto}
table.lb{border-collapse:collapse;font-size:12.5px}
table.lb th,table.lb td{border:1px solid #dde;padding:3px 6px;vertical-align:top;text-align:left}
table.lb thead th{position:sticky;top:0;background:#e9ecf4;cursor:pointer;white-space:nowrap}
table.lb thead th[aria-sort=ascending]::after{content:" ▲"}table.lb thead th[aria-sort=descending]::after{content:" ▼"}
table.lb tbody th{background:#f7f8fb;white-space:nowrap}
table.lb td[data-p]{cursor:help}
td.best .v{font-weight:bold}td.best{background:#e6f4ea}td.tie{background:#f6fbf7}
.mark{color:#2a7a3b;font-weight:bold}
.v{white-space:nowrap}
.ci{display:block;color:#667;font-size:11px}
img.thumb{display:block;height:44px;margin-top:2px;image-rendering:pixelated;transition:transform .15s;
 transform-origin:top left}
img.thumb:hover{transform:scale(3);position:relative;z-index:5;box-shadow:0 2px 8px #0005}
.noset{display:inline-block;margin-top:2px;padding:1px 5px;border:1px dashed #aab;color:#778;font-size:11px;
 border-radius:3px}
#prov{position:fixed;right:1em;bottom:1em;max-width:44em;background:#fff;border:1px solid #99a;padding:.6em 1em;
 box-shadow:0 4px 16px #0003;border-radius:6px;z-index:10}
#prov pre{white-space:pre-wrap;margin:.3em 0 0;font-size:12px}
"""

JS = """
(function(){
  var prov = JSON.parse(document.getElementById('provenance').textContent);
  var panel = document.getElementById('prov'), text = panel.querySelector('pre');
  document.querySelectorAll('td[data-p]').forEach(function(td){
    td.title = prov[td.dataset.p];
    td.addEventListener('click', function(){ text.textContent = prov[td.dataset.p]; panel.hidden = false; });
  });
  panel.querySelector('button').addEventListener('click', function(){ panel.hidden = true; });
  function key(cell, numeric){
    var s = cell ? cell.getAttribute('data-sort') : null;
    if (s === null || s === '') return null;
    return numeric ? parseFloat(s) : s.toLowerCase();
  }
  function sortBy(th){
    var table = th.closest('table'), col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.some(function(r){ var c = r.cells[col]; var v = c && c.getAttribute('data-sort');
                                          return v !== null && v !== '' && !isNaN(parseFloat(v)) && isFinite(v); });
    var ascending = th.getAttribute('aria-sort') === 'descending' || (!numeric && !th.hasAttribute('aria-sort'));
    rows.sort(function(a, b){
      var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
      if (x === null || y === null) return (x === null) - (y === null);  // empty cells last either way
      var d = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? d : -d;
    });
    rows.forEach(function(r){ body.appendChild(r); });
    th.parentNode.querySelectorAll('th').forEach(function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  }
  document.querySelectorAll('table.lb thead th').forEach(function(th){
    th.addEventListener('click', function(){ sortBy(th); });
    th.addEventListener('keydown', function(e){ if (e.key === 'Enter') sortBy(th); });
  });
})();
"""


def _legend() -> str:
    return ("<div class=\"legend\">"
            "<p>Cells: mean ± std in points over the per-model values of all seeds pooled (n = trained evaluation "
            f"models), as in the CSV; below it the {LEVEL * 100:.0f} % t-interval over the seed means and the "
            "number of seeds, and a thumbnail of the cell's distilled set (hover to enlarge; a dashed box says why "
            "there is none).</p>"
            f"<p><b>Bold</b> on green: the column's significantly best cell (Welch's two-sided t-test over seed "
            f"means, p &lt; {ALPHA:g}, against every other cell). <span class=\"mark\">{TIE}</span> on pale green: "
            "a tie, the best and every cell not significantly below it. No mark: significantly below the best, "
            "or not ranked (<code>real</code>, cells that lost seeds to divergence).</p>"
            "<p>Click a column header to sort (again to reverse); hover a cell for its provenance (seeds, budget, "
            "commit, distillation and evaluation seconds, records, set files), click it to pin that in a panel. "
            "Balanced accuracy has its own tables and, where the majority class exceeds half the test split, a "
            "\"bal. acc\" column beside accuracy; the privacy tables show the same cells' accuracy beside their "
            "figures.</p></div>")


def render_page(records: Iterable[Record], out: Path, privacy: Iterable[Record] = (),
                failures: Iterable[Record] = (), sets_root: str | os.PathLike[str] | None = None,
                paper_csv: str | os.PathLike[str] = PAPER_RESULTS) -> str:
    """The page's HTML; thumbnails are written to ``out/thumbs`` as the cells need them."""
    records, privacy, failures = list(records), list(privacy), list(failures)
    render = Renderer(out, SetFiles(sets_root))
    accuracy, private = leaderboard_tables(records, paper_csv, failures), privacy_tables(privacy, {r.get("id") for r in untrusted(records)})
    note = ("\"test acc (same cell)\" and \"bal. acc (same cell)\": the accuracy tables' cell of the same dataset, "
            "ipc, network, method and budget, pooled over all its seeds (the audited sets are some of them).")
    # the newest scope first: the tables a visitor should read first; then the tables over all scopes
    scopes = list(dict.fromkeys(t.scope for t in [*accuracy, *private] if t.scope))[::-1]
    ordered = [t for scope in [*scopes, ""] for t in [*accuracy, *private] if t.scope == scope]
    sections = [_table_html(t, _with_accuracy(t, records), render, note) if t in private
                else _table_html(t, t.frame("cells"), render) for t in ordered]
    toc = "".join(f"<tr><th>{html.escape(scope or 'all budgets')}</th><td>"
                  + " · ".join(f'<a href="#{t.stem}" title="{html.escape(t.title)}">{html.escape(_short(t))}</a>'
                               for t in ordered if t.scope == scope) + "</td></tr>" for scope in [*scopes, ""])
    source = (f"{count(len(records), 'record')}, {count(len(privacy), 'privacy result')} and "
              f"{count(len(failures), 'failure')}")
    data = json.dumps(render.provenance, sort_keys=True, ensure_ascii=False).replace("</", "<\\/")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\"><title>MDD benchmark leaderboard</title>"
            f"<style>{CSS}</style></head><body>"
            "<h1>MDD benchmark leaderboard</h1>"
            f"<p>Generated by <code>mddbench web</code> from {source}; never edited by hand (regenerate it "
            "instead). The same tables as the markdown and CSV files, with the same numbers.</p>"
            f"{_legend()}<nav><table class=\"toc\">{toc}</table></nav>{''.join(sections)}"
            "<aside id=\"prov\" hidden><button type=\"button\">close</button><pre></pre></aside>"
            f"<script type=\"application/json\" id=\"provenance\">{data}</script>"
            f"<script>{JS}</script></body></html>\n")


def write_web(records: Iterable[Record], out_dir: str | os.PathLike[str], privacy: Iterable[Record] = (),
              failures: Iterable[Record] = (), sets_root: str | os.PathLike[str] | None = None,
              paper_csv: str | os.PathLike[str] = PAPER_RESULTS) -> list[Path]:
    """Write ``out_dir/index.html`` and the thumbnails it shows (``thumbs/*.png``; thumbnails of an earlier page
    that this one does not show are removed); return the paths. ``sets_root``: the folder the records' relative
    ``artifact`` paths start from (their store's folder)."""
    records = list(records)
    if not records:
        raise ConfigError("no records to put on a web page (run `mddbench run ...` first, or give --records)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder for the web page")
    (out / THUMBS).mkdir(parents=True, exist_ok=True)
    page = render_page(records, out, privacy, failures, sets_root, paper_csv)
    thumbs = sorted(out / THUMBS / Path(v).name for v in re.findall(r'src="(thumbs/[0-9a-f]+\.png)"', page))
    for stale in (out / THUMBS).glob("*.png"):
        if stale not in thumbs:
            stale.unlink()
    return [write_text(out / PAGE, page, newline="\n"), *thumbs]
