"""`bench report`: every table and figure written so far, on one static HTML page.

The page is a single file (`results/report.html`): tables become real HTML tables, built from
the data (an experiment's `table.json`, the records) by the same renderers as every table, PNG figures
are embedded as data URIs and there is no script or style from the network, so it can be mailed,
archived or opened from a laptop without the results folder beside it. Each experiment's section
ends with the provenance of the records behind its numbers (commits, devices, package versions,
wall time), because a table without its origin cannot be trusted or reproduced.

The report only reads: the records, and what the experiments wrote (each table's and figure's
stem.json names the runs it read). It runs no experiment, draws no figure and aggregates through
the one path `bench table` uses (`bench.sweep_table.sweep_rows`).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from bench.config import SweepConfig
from bench.errors import ConfigError
from bench.records import load_records
from bench.report_provenance import provenance_html
from bench.store import TMP_PREFIX, atomic_write_bytes
from bench.tables.cells import CELL, ResultTable, summarise, table_from_json
from bench.tables.formats import html_table
from bench.tables.render import footnotes, render_records, result_grid


@dataclass(frozen=True)
class ReportConfig:
    """Names and widths of the page; one place for every constant."""

    filename: str = "report.html"
    title: str = "bench report"
    reserved: tuple[str, ...] = ("records", "artefacts", "predictions", "checkpoints", "slurm", "smoke")
    table_exts: tuple[str, ...] = (".md", ".csv", ".tex")
    data_ext: str = ".json"  # beside a table's renderings: its data, which the page renders
    figure_max_width_px: int = 900
    long_table_rows: int = 40  # a table with more rows (a long per-seed CSV) starts folded


CFG = ReportConfig()

# Sets data-images-ok on <body> once every figure has decoded, so a headless browser (and a
# human with the inspector) can tell a broken embed from a good one. Inline: no network.
_ONLOAD = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
  document.body.setAttribute('data-images-ok', ok === imgs.length ? 'true' : 'false');
});
</script>"""

_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
img { max-width: %dpx; height: auto; } details { margin: 0.5em 0 1.5em; }
.note { color: #666; } code { font-size: 0.95em; }
</style>""" % CFG.figure_max_width_px


def write_report(sweep: SweepConfig, references: Sequence[str] = (), rank: Sequence[str] = (),
                 metric: str = "dice") -> Path:
    """Gather results/*/ and results/records into results/report.html (atomically); return its path.

    `references` (`--reference DIR`) add their records of this sweep's configuration to the
    aggregate table, marked with their folder, and each method of `rank` (`--rank`; by default,
    with references, the sweep's own methods) is ranked against the others (bench.rank)."""
    out = Path(sweep.output)
    if not out.is_dir():
        raise ConfigError(sweep.source, "output",
                          f"{out} does not exist; run `bench run` or `bench experiment NAME` first")
    records = load_records(out)
    by_id = {r["run_id"]: r for r in records if isinstance(r.get("run_id"), str)}
    sections = [_experiment_section(folder, by_id) for folder in experiment_folders(out)]
    body = [f"<h1>{_e(CFG.title)}</h1>",
            f"<p class=note>{_e(str(out))} &middot; written {_e(_now())} &middot; "
            f"{len(sections)} experiment(s), {len(records)} record(s)</p>",
            _contents([(name, title) for name, title, _ in sections], bool(records))]
    body += [section for _, _, section in sections]
    if records:
        body.append(_aggregate_section(records, sweep))
    if references or rank:
        body.append(_ranking_section(sweep, references, rank or sweep.methods, metric))
    page = ("<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
            f"<title>{_e(CFG.title)}</title>\n{_STYLE}\n</head>\n<body>\n"
            + "\n".join(body) + f"\n{_ONLOAD}\n</body>\n</html>\n")
    path = out / CFG.filename
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def experiment_folders(out: Path) -> list[Path]:
    """Sub-folders of the output holding a table or a figure (records, artefacts... are not)."""
    wanted = set(CFG.table_exts) | {".png", ".pdf"}
    return [d for d in sorted(out.iterdir()) if d.is_dir() and d.name not in CFG.reserved
            and any(_is_output(f) and f.suffix in wanted for f in d.iterdir())]


def _is_output(path: Path) -> bool:
    return path.is_file() and not path.name.startswith((TMP_PREFIX, "."))


def _experiment_section(folder: Path, by_id: dict[str, dict]) -> tuple[str, str, str]:
    name = folder.name
    title, used, note = experiment_records(folder, by_id)
    heading = f"{name}: {title}" if title else name
    parts = [f'<section id="{_anchor(name)}">', f"<h2>{_e(heading)}</h2>"]
    files = sorted(f for f in folder.iterdir() if _is_output(f))
    stems = sorted({f.stem for f in files if f.suffix in CFG.table_exts}, key=lambda s: (s != "table", s))
    for stem in stems:
        parts.append(_table_block(folder, stem))
    pngs = [f for f in files if f.suffix == ".png"]
    pdf_only = [f for f in files if f.suffix == ".pdf" and not f.with_suffix(".png").exists()]
    if pngs or pdf_only:
        parts.append("<h3>Figures</h3>")
        parts += [_figure(folder, png) for png in pngs]
        parts += [f'<p><a href="{_href(folder, f)}">{_e(f.name)}</a></p>' for f in pdf_only]
    parts.append("<h3>Provenance</h3>")
    if note:
        parts.append(f"<p class=note>{_e(note)}</p>")
    if used:
        parts.append(provenance_html(used))
    parts.append("</section>")
    return name, title, "\n".join(parts)


def experiment_records(folder: Path, by_id: dict[str, dict]) -> tuple[str, list[dict], str]:
    """(title, the records the experiment read, a note), from what it wrote: the `runs` of each
    table's and figure's stem.json in its folder. The title is the registered experiment's."""
    from bench import experiments
    from bench.errors import BenchError

    try:
        title = experiments.get(folder.name).title
    except BenchError:
        title = ""
    ids: list[str] = []
    named = False
    for path in sorted(folder.glob(f"*{CFG.data_ext}")):
        runs = _json(path).get("runs")
        if isinstance(runs, list):
            named = True
            ids += [i for i in runs if isinstance(i, str) and i not in ids]
    if not named:
        return title, [], ("its files name no runs (written by an older bench, or by hand); "
                           f"`bench experiment {folder.name} --no-run` writes them again with their runs")
    used = [by_id[i] for i in ids if i in by_id]
    missing = len(ids) - len(used)
    note = f"{len(used)} of the {len(ids)} runs it read have records here"
    return title, used, note + (f"; {missing} are gone from records/" if missing else "")


def _json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} where it is unreadable or no object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _table_block(folder: Path, stem: str) -> str:
    """A table from its data (stem.json, written by `write_tables`) through the layout and HTML
    writer every table uses; a CSV without data shown as it is; Markdown without data (an older
    bench, hand-written notes) as preformatted text, never parsed back into a table."""
    data, md, csv_path = (folder / f"{stem}{ext}" for ext in (CFG.data_ext, ".md", ".csv"))
    links = " &middot; ".join(f'<a href="{_href(folder, folder / (stem + ext))}">{_e(stem + ext)}</a>'
                              for ext in (*CFG.table_exts, CFG.data_ext) if (folder / (stem + ext)).is_file())
    table = _result_table(data)
    if table is not None:
        content = result_html(table)
    elif csv_path.is_file():
        content = csv_html(csv_path.read_text(encoding="utf-8", errors="replace"))
    elif md.is_file():
        content = f"<pre>{_e(md.read_text(encoding='utf-8', errors='replace'))}</pre>"
    else:
        content = "<p class=note>LaTeX only; see the link.</p>"
    rows = content.count("<tr>")
    if rows > CFG.long_table_rows:  # e.g. one row per seed: the numbers are there, folded away
        content = f"<details><summary>{rows - 1} rows</summary>\n{content}\n</details>"
    return f'<div class=table><h3>{_e(stem)}</h3>\n{content}\n<p class=note>{links}</p></div>'


def _result_table(path: Path) -> ResultTable | None:
    """The table in a data file, or None where there is none (or it is no bench table)."""
    try:
        return table_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def result_html(table: ResultTable) -> str:
    """An experiment's table as the experiment printed it: the same numbers, marks and notes."""
    stats = summarise(table)
    return html_table(result_grid(table, stats, footnotes(table, stats)))


def _figure(folder: Path, png: Path) -> str:
    """The PNG embedded, its PDF linked, and the notes its stem.json keeps (what it left out)."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    pdf = png.with_suffix(".pdf")
    link = f' &middot; <a href="{_href(folder, pdf)}">PDF</a>' if pdf.is_file() else ""
    notes = _json(png.with_suffix(CFG.data_ext)).get("notes")
    lines = "".join(f"<br><span class=note>{_e(n)}</span>" for n in notes if isinstance(n, str)) \
        if isinstance(notes, list) else ""
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(png.stem)}">'
            f"<figcaption>{_e(png.name)}{link}{lines}</figcaption></figure>")


def csv_html(text: str) -> str:
    """A CSV that has no table data beside it (a long per-seed file, a foreign one), header first."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows:
        return ""
    lines = ["<table>"]
    for i, row in enumerate(rows):
        tag = "th" if i == 0 else "td"
        lines.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in row) + "</tr>")
    return "\n".join(lines + ["</table>"])


def _inline(text: str) -> str:
    """Escape, then turn **bold** and `code` into tags (a hand-made CSV may mark its cells so)."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _aggregate_section(records: list[dict[str, Any]], sweep: SweepConfig) -> str:
    """`bench table --all`, by its own rows (`sweep_rows`): one row per cell and configuration of
    every record (never pooled), the trivial reference rows and the published values."""
    from bench.sweep_table import sweep_rows

    selected = sweep_rows(sweep, every=True, loaded=records)
    keys = (*CELL, "seed")
    note = (f"<p class=note>{selected.skipped} record(s) without {', '.join(keys)} left out of this table</p>"
            if selected.skipped else "")
    return "\n".join(['<section id="all-records">', "<h2>All records (<code>bench table --all</code>)</h2>",
                      render_records(selected.rows, "html"), note,
                      "<h3>Provenance</h3>", provenance_html(records), "</section>"])


def _ranking_section(sweep: SweepConfig, references: Sequence[str], methods: Sequence[str], metric: str) -> str:
    """The sweep's records beside the references' of its configuration, and the paired rankings."""
    from bench.rank import rank, render_ranking
    from bench.sweep_table import sweep_rows

    selected = sweep_rows(sweep, references=references)
    parts = ['<section id="ranking">', "<h2>Against the reference records</h2>",
             f"<p class=note>references: {_e(', '.join(references) or 'none')}</p>",
             render_records(selected.rows, "html")]
    for method in methods:
        rankings = rank(selected.selected, method, metric)
        parts.append(render_ranking(rankings, "html") if rankings else
                     f"<p class=note>{_e(method)}: no records with {_e(metric)} of this configuration</p>")
    return "\n".join(parts + ["</section>"])


def _contents(sections: list[tuple[str, str]], has_records: bool) -> str:
    items = [f'<li><a href="#{_anchor(n)}">{_e(n)}</a>{": " + _e(t) if t else ""}</li>' for n, t in sections]
    if has_records:
        items.append('<li><a href="#all-records">All records</a></li>')
    if not items:
        return "<p class=note>Nothing to report yet: no experiment output and no records.</p>"
    return "<nav><h2>Contents</h2>\n<ul>\n" + "\n".join(items) + "\n</ul></nav>"


def _anchor(name: str) -> str:
    return "exp-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _href(folder: Path, path: Path) -> str:
    """Relative to the page, which lies in the output folder beside the experiment folders."""
    from urllib.parse import quote

    return _e(quote(f"{folder.name}/{path.name}"))


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
