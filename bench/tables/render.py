"""Tables as text: the two layouts, and CSV straight from the numbers.

`bench.tables.cells` makes the numbers; `result_grid` (the experiments' `ResultTable`) and
`records_grid` (`bench table`) lay them out as a `bench.tables.formats.Grid`, which one writer per
format prints (Markdown, LaTeX, HTML), so a number reads the same in every table and format: mean
± std with the decimals of `bench.tables.cells.CFG`, "± n/a" where n = 1 (the sample std of one
value is undefined, never 0), a reference (trivial) value bare, "—" where a result table has no
value.
"""
from __future__ import annotations

import csv
import io
import math

from bench.data.scale import SCALE_RULE
from bench.tables.cells import CFG, OWN, Cell, CellStats, RecordRow, ResultTable, TableConfig, metrics_of
from bench.tables.formats import Grid, Head, Text, html_table, latex, markdown

DASH = "—"   # no value
NA = "n/a"   # the std of a single value
STD_NOTE = f"± {NA}: a single value (n = 1), whose sample std is undefined."
REFERENCE_NOTE = ("trivial (reference): a constant predictor, never trained, scored on the test set: every pixel "
                  "foreground (binary data; config all-foreground), or every pixel the most frequent class at its "
                  "position in seed 0's labelled images (multi-class; config pixel-mode-s0); a method at or below "
                  "it learned nothing a constant could not.")
REFERENCE_TEST = "reference: constant predictor, never trained"
SIDE_NOTE = ("side (px): the long side the runs resized the test images to; + objects: above the preset's cap, "
             f"so that the median training instance stays at least {SCALE_RULE.min_diameter_px:g} px across "
             "(docs/working-scale.md); fixed: a network's fixed input; <=N: the cap of a record from before the "
             "side was recorded.")
PAPER_NOTE = ("dice_paper, iou_paper: GlaS Dice and IoU as the paper's code computed them (an empty prediction "
              "scores Dice 1; IoU = D / (2 - D) of the mean Dice); the published GlaS numbers stand beside them "
              "where the records hold them, beside dice and iou in older records.")
PAPER_METRICS = frozenset({"dice_paper", "iou_paper"})
SOURCE_NOTE = (f"source: where a row's records were read: {OWN} (this sweep's output folder) or a --reference "
               "folder (read only); a reference row holds only records of this sweep's configuration.")


def num(x: float, cfg: TableConfig = CFG) -> str:
    return f"{x:.{cfg.decimals}f}"


def mean_std(mean: float, std: float | None) -> str:
    """The one notation of a mean over seeds: "82.00 ± 2.00", or "82.00 ± n/a" for one seed."""
    return f"{num(mean)} ± {NA if std is None else num(std)}"


def published_text(pub: tuple[float, float] | None) -> str:
    """A published value; bare where the paper printed no std."""
    if pub is None:
        return DASH
    return num(pub[0]) if math.isnan(pub[1]) else f"{num(pub[0])} ± {num(pub[1])}"


# --- the experiments' tables --------------------------------------------------------------------
def footnotes(table: ResultTable, stats: dict[Cell, CellStats], cfg: TableConfig = CFG) -> list[str]:
    better = "highest" if table.higher_is_better else "lowest"
    lines = [f"Ours: mean ± sample std over n seeds; bold: the {better} mean of the column."]
    if any(s.n == 1 for s in stats.values()):
        lines.append(STD_NOTE)
    if table.published:
        lines.append("paper: the published mean ± std (10 seeds; std where printed); Δ = ours − paper, in points.")
    if any(s.significant for s in stats.values()):
        lines.append(f"{cfg.mark}: differs from the column's best at p < {cfg.alpha:g} (paired two-sided "
                     f"Wilcoxon signed-rank test over the seeds both rows share; none with fewer than "
                     f"{cfg.min_pairs}).")
    else:
        lines.append(f"No gap to a column's best is significant at p < {cfg.alpha:g} (paired Wilcoxon "
                     f"signed-rank test over shared seeds; not run with fewer than {cfg.min_pairs} pairs).")
    if table.references:
        lines.append(REFERENCE_NOTE)
    return lines + list(table.notes)


def _has_published(table: ResultTable, col: str) -> bool:
    return any((row, col) in table.published for row in table.rows)


def result_grid(table: ResultTable, stats: dict[Cell, CellStats], notes: list[str]) -> Grid:
    head = [Head("method", "Method")]
    for col in table.columns:
        head.append(Head(col, col, "ours"))
        if _has_published(table, col):
            head += [Head("paper", col, "paper"), Head("Δ", col, "Δ")]
    body = []
    for row in table.rows:
        cells = [Text(row)]
        for col in table.columns:
            s = stats[(row, col)]
            cells.append(Text(DASH) if s.mean is None else
                         Text(mean_std(s.mean, s.std), best=s.best, mark=s.significant, n=s.n))
            if _has_published(table, col):
                diff = DASH if s.diff is None else f"{s.diff:+.{CFG.decimals}f}"
                cells += [Text(published_text(s.published)), Text(diff, signed=True)]
        body.append(cells)
    for row, by_col in table.references.items():
        cells = [Text(f"{row} (reference)", reference=True)]
        for col in table.columns:
            cells.append(Text(num(by_col[col]), reference=True) if col in by_col else Text(DASH))
            if _has_published(table, col):
                cells += [Text(DASH), Text(DASH)]
        body.append(cells)
    return Grid(head, body, table.title, notes, grouped=True)


def render_result(table: ResultTable, stats: dict[Cell, CellStats], notes: list[str]) -> dict[str, str]:
    """{extension: text} of the files an experiment writes for one table."""
    grid = result_grid(table, stats, notes)
    return {"md": markdown(grid), "tex": latex(grid), "csv": result_csv(table, stats)}


CSV_FIELDS = ("row", "column", "mean", "std", "n", "seeds", "published_mean", "published_std", "diff",
              "best", "p", "significant", "test")


def result_csv(table: ResultTable, stats: dict[Cell, CellStats]) -> str:
    """One line per (row, column); empty fields where there is no value (std: one seed; p: no test)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in table.rows:
        for col in table.columns:
            s = stats[(row, col)]
            pub = s.published
            writer.writerow([row, col, _g(s.mean), _g(s.std), s.n, " ".join(map(str, s.seeds)),
                             _g(pub[0] if pub else None), _g(pub[1] if pub else None), _g(s.diff),
                             int(s.best), _g(s.p), int(s.significant), s.test])
    for row, by_col in table.references.items():
        for col in table.columns:
            if col in by_col:
                writer.writerow([f"{row} (reference)", col, _g(by_col[col]), "", 1, "", "", "", "", 0, "", 0,
                                 REFERENCE_TEST])
    return buf.getvalue()


def _csv_number(x: float | None, spec: str) -> str:
    """A CSV field: empty where there is no number (std of one value, no test, no paper value)."""
    return "" if x is None or math.isnan(x) else format(x, spec)


def _g(x: float | None) -> str:  # the experiments' CSVs: every significant digit
    return _csv_number(x, ".10g")


# --- `bench table` --------------------------------------------------------------------------------
def records_grid(rows: list[RecordRow], metrics: list[str]) -> Grid:
    """The key, n, then per metric mean ± std and, where the paper has numbers, the published one."""
    with_paper = [m for m in metrics if any(m in r.cells and r.cells[m].published for r in rows)]
    sourced = any(r.source for r in rows)
    head = [Head(k) for k in ("dataset", "fraction", "method", *(("source",) if sourced else ()), "preset",
                              "config", "n", "wall (s)", "side (px)")]
    for m in metrics:
        head.append(Head(m))
        if m in with_paper:
            head.append(Head(f"{m} (published)"))
    body = []
    for r in rows:
        method = f"{r.method} (reference)" if r.reference else r.method
        cells = [Text(r.dataset), Text(str(r.fraction)), Text(method, reference=r.reference),
                 *([Text(_source(r))] if sourced else []), Text(r.preset),
                 Text(r.config), Text(str(r.n)), Text("" if r.wall_s is None else f"{r.wall_s:.0f}"),
                 Text(r.working_side)]
        for m in metrics:
            s = r.cells.get(m)
            cells.append(Text("") if s is None or s.mean is None else
                         Text(num(s.mean), reference=True) if r.reference else Text(mean_std(s.mean, s.std)))
            if m in with_paper:
                cells.append(Text(published_text(s.published) if s is not None and s.published else ""))
        body.append(cells)
    notes = [REFERENCE_NOTE] if any(r.reference for r in rows) else []
    if any(not r.reference and s.n == 1 for r in rows for s in r.cells.values()):
        notes.append(STD_NOTE)
    if any(r.working_side for r in rows):
        notes.append(SIDE_NOTE)
    if PAPER_METRICS & set(with_paper):
        notes.append(PAPER_NOTE)
    if sourced:
        notes.append(SOURCE_NOTE)
    return Grid(head, body, notes=notes, right=len(head))


def _source(row: RecordRow) -> str:
    return "" if row.reference else row.source or OWN


def render_records(rows: list[RecordRow], fmt: str) -> str:
    """`bench table --format FMT`: csv (every number), markdown, latex or html."""
    metrics = metrics_of(rows)
    if fmt == "csv":
        return records_csv(rows, metrics)
    writer = {"markdown": markdown, "latex": latex, "html": html_table}[fmt]
    return writer(records_grid(rows, metrics))


def records_csv(rows: list[RecordRow], metrics: list[str]) -> str:
    """Every number: `<metric>_mean`, `_std` (empty for one record), `_published_mean`, `_published_std`
    (empty where the paper printed none), and `reference` (True for the trivial rows)."""
    with_paper = {m for m in metrics if any(m in r.cells for r in rows if not r.reference)}
    sourced = any(r.source for r in rows)
    fields = ["dataset", "fraction", "method", *(["source"] if sourced else []), "preset", "config", "n", "wall_s",
              "working_side", "reference"]
    for m in metrics:
        fields += [f"{m}_mean", f"{m}_std"] + ([f"{m}_published_mean", f"{m}_published_std"] if m in with_paper else [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    for r in rows:
        line = [r.dataset, _f(r.fraction), r.method, *([_source(r)] if sourced else []), r.preset, r.config, r.n,
                _f(r.wall_s), r.working_side, r.reference]
        for m in metrics:
            s = r.cells.get(m)
            line += [_f(s.mean if s else None), _f(s.std if s else None)]
            if m in with_paper:
                pub = s.published if s else None
                line += [_f(pub[0] if pub else None), _f(pub[1] if pub else None)]
        writer.writerow(line)
    return buf.getvalue()


def _f(x: float | None) -> str:  # `bench table --format csv`: four decimals, as it always printed
    return _csv_number(x, ".4f")
