"""A result table as Markdown, LaTeX and CSV, all from one `summarise` of it.

Bold marks the column's best mean, a dagger a significant gap to it; the CSV holds every number,
one line per (row, column), for scripts.
"""
from __future__ import annotations

import csv
import io
import math

from bench.experiments.table_stats import CFG, Cell, CellStats, ResultTable, TableConfig

DASH = "—"


def footnotes(table: ResultTable, stats: dict[Cell, CellStats], cfg: TableConfig = CFG) -> list[str]:
    better = "highest" if table.higher_is_better else "lowest"
    lines = [f"Ours: mean ± sample std over n seeds; bold: the {better} mean of the column."]
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


REFERENCE_NOTE = ("trivial (reference): a constant predictor, never trained, scored on the test set: every pixel "
                  "foreground (binary data), or every pixel the most frequent class at its position in seed 0's "
                  "labelled images (multi-class); a method at or below it learned nothing a constant could not.")
REFERENCE_TEST = "reference: constant predictor, never trained"


def _ref_label(row: str) -> str:
    return f"{row} (reference)"


def _num(x: float, cfg: TableConfig = CFG) -> str:
    return f"{x:.{cfg.decimals}f}"


def _pub(pub: tuple[float, float] | None) -> str:
    if pub is None:
        return DASH
    return _num(pub[0]) if math.isnan(pub[1]) else f"{_num(pub[0])} ± {_num(pub[1])}"


def _ours(s: CellStats) -> str:
    if s.mean is None:
        return DASH
    return f"{_core(s)} (n={s.n})"


def _diff(s: CellStats) -> str:
    return DASH if s.diff is None else f"{s.diff:+.{CFG.decimals}f}"


def _has_published(table: ResultTable, col: str) -> bool:
    return any((row, col) in table.published for row in table.rows)


def render_markdown(table: ResultTable, stats: dict[Cell, CellStats], notes: list[str]) -> str:
    head, sep = ["method"], ["---"]
    for col in table.columns:
        head.append(col)
        sep.append("---:")
        if _has_published(table, col):
            head += ["paper", "Δ"]
            sep += ["---:", "---:"]
    lines = [f"# {table.title}", ""] if table.title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(sep) + "|"]
    for row in table.rows:
        cells = [_md_escape(row)]
        for col in table.columns:
            s = stats[(row, col)]
            text = _ours(s)
            if s.mean is not None and s.best:
                text = text.replace(_core(s), f"**{_core(s)}**", 1)
            if s.significant:
                text = text.replace(_core(s), _core(s) + CFG.mark, 1)
            cells.append(text)
            if _has_published(table, col):
                cells += [_pub(s.published), _diff(s)]
        lines.append("| " + " | ".join(cells) + " |")
    for row, by_col in table.references.items():
        cells = [_md_escape(_ref_label(row))]
        for col in table.columns:
            cells.append(_num(by_col[col]) if col in by_col else DASH)
            if _has_published(table, col):
                cells += [DASH, DASH]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + notes) + "\n"


def _core(s: CellStats) -> str:
    assert s.mean is not None
    return _num(s.mean) if s.std is None else f"{_num(s.mean)} ± {_num(s.std)}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "−": "$-$", "†": r"$^\dagger$",
                  "ε": r"$\epsilon$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(table: ResultTable, stats: dict[Cell, CellStats], notes: list[str]) -> str:
    spans = [(col, 3 if _has_published(table, col) else 1) for col in table.columns]
    spec = "l" + "".join("c" * width for _, width in spans)
    top = ["Method"] + [rf"\multicolumn{{{w}}}{{c}}{{{latex_escape(col)}}}" for col, w in spans]
    sub = [""] + [part for _, w in spans for part in (["ours", "paper", r"$\Delta$"] if w == 3 else ["ours"])]
    lines = [f"% {latex_escape(table.title)}" if table.title else "% result table",
             rf"\begin{{tabular}}{{{spec}}}", r"\hline", " & ".join(top) + r" \\"]
    if any(w == 3 for _, w in spans):
        lines.append(" & ".join(sub) + r" \\")
    lines.append(r"\hline")
    for row in table.rows:
        cells = [latex_escape(row)]
        for col, width in spans:
            s = stats[(row, col)]
            if s.mean is None:
                text = "---"
            else:
                core = latex_escape(_core(s))
                text = (rf"\textbf{{{core}}}" if s.best else core) + (CFG.mark_latex if s.significant else "")
                text += rf" {{\scriptsize (n={s.n})}}"
            cells.append(text)
            if width == 3:
                cells += [latex_escape(_pub(s.published)), latex_escape(_diff(s).replace("-", "−"))]
        lines.append(" & ".join(cells) + r" \\")
    for row, by_col in table.references.items():
        cells = [rf"\textit{{{latex_escape(_ref_label(row))}}}"]
        for col, width in spans:
            cells.append(rf"\textit{{{_num(by_col[col])}}}" if col in by_col else "---")
            if width == 3:
                cells += ["---", "---"]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize"]
    lines += [latex_escape(n) + r"\par" for n in notes]
    return "\n".join(lines + ["}"]) + "\n"


CSV_FIELDS = ("row", "column", "mean", "std", "n", "seeds", "published_mean", "published_std", "diff",
              "best", "p", "significant", "test")


def render_csv(table: ResultTable, stats: dict[Cell, CellStats]) -> str:
    """One line per (row, column); empty fields where there is no value (p: no test made)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in table.rows:
        for col in table.columns:
            s = stats[(row, col)]
            pub = s.published
            writer.writerow([row, col, _f(s.mean), _f(s.std), s.n, " ".join(map(str, s.seeds)),
                             _f(pub[0] if pub else None), _f(pub[1] if pub else None), _f(s.diff),
                             int(s.best), _f(s.p), int(s.significant), s.test])
    for row, by_col in table.references.items():
        for col in table.columns:
            if col in by_col:
                writer.writerow([_ref_label(row), col, _f(by_col[col]), "", 1, "", "", "", "", 0, "", 0,
                                 REFERENCE_TEST])
    return buf.getvalue()


def _f(x: float | None) -> str:
    return "" if x is None or math.isnan(x) else format(x, ".10g")
