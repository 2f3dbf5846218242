"""One writer per format for any table grid: Markdown, LaTeX and HTML.

A `Grid` is what a table shows, already as text (bench.tables.render makes it from the numbers);
the writers only decide how a cell's parts (its number, bold for the column's best, the
significance mark, "(n=...)") are marked up, so every format says the same thing.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

from bench.tables.cells import CFG


@dataclass(frozen=True)
class Text:
    """One cell: `core` (bold when `best`), a significance mark, then "(n=...)" when n is set."""

    core: str
    best: bool = False
    mark: bool = False
    n: int | None = None
    reference: bool = False   # a trivial value or row label (italic in LaTeX)
    signed: bool = False      # a difference: LaTeX prints its minus sign as one


@dataclass(frozen=True)
class Head:
    """A column: its `label` (Markdown, HTML); LaTeX sets consecutive columns of one `group` under
    one heading, with `sub` below (when the grid is `grouped`)."""

    label: str
    group: str = ""
    sub: str = ""


@dataclass
class Grid:
    head: list[Head]
    body: list[list[Text]]
    title: str = ""
    notes: list[str] = field(default_factory=list)
    right: int = 1        # Markdown: columns from this one on are right-aligned
    grouped: bool = False  # LaTeX: a heading per group of columns, sub-labels below


def markdown(grid: Grid) -> str:
    lines = [f"# {grid.title}", ""] if grid.title else []
    lines += ["| " + " | ".join(_md_escape(h.label) for h in grid.head) + " |",
              "|" + "|".join("---" if i < grid.right else "---:" for i in range(len(grid.head))) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in grid.body]
    return "\n".join(lines + ([""] + grid.notes if grid.notes else [])) + "\n"


def _md_cell(c: Text) -> str:
    core = _md_escape(c.core)
    return (f"**{core}**" if c.best else core) + (CFG.mark if c.mark else "") + ("" if c.n is None else f" (n={c.n})")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def html_table(grid: Grid) -> str:
    """A <table> (title above as <h4>, notes below as paragraphs); every text escaped."""
    out = [f"<h4>{_h(grid.title)}</h4>"] if grid.title else []
    out += ["<table>", "<tr>" + "".join(f"<th>{_h(h.label)}</th>" for h in grid.head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in grid.body]
    out.append("</table>")
    return "\n".join(out + [f"<p>{_h(n)}</p>" for n in grid.notes])


def _html_cell(c: Text) -> str:
    core = f"<strong>{_h(c.core)}</strong>" if c.best else _h(c.core)
    return core + (CFG.mark if c.mark else "") + ("" if c.n is None else f" (n={c.n})")


def _h(text: str) -> str:
    return html.escape(text, quote=False)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "−": "$-$", "†": r"$^\dagger$",
                  "ε": r"$\epsilon$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex(grid: Grid) -> str:
    lines = [f"% {latex_escape(grid.title)}" if grid.title else "% result table",
             rf"\begin{{tabular}}{{l{'c' * (len(grid.head) - 1)}}}", r"\hline"]
    if grid.grouped:
        spans: list[tuple[str, int]] = []
        for h in grid.head[1:]:
            if spans and spans[-1][0] == h.group:
                spans[-1] = (h.group, spans[-1][1] + 1)
            else:
                spans.append((h.group, 1))
        top = [latex_escape(grid.head[0].group)] + [rf"\multicolumn{{{w}}}{{c}}{{{latex_escape(g)}}}" for g, w in spans]
        lines.append(" & ".join(top) + r" \\")
        if any(w > 1 for _, w in spans):
            lines.append(" & ".join(latex_escape(h.sub) for h in grid.head) + r" \\")
    else:
        lines.append(" & ".join(latex_escape(h.label) for h in grid.head) + r" \\")
    lines.append(r"\hline")
    lines += [" & ".join(_latex_cell(c) for c in row) + r" \\" for row in grid.body]
    lines += [r"\hline", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize"]
    lines += [latex_escape(n) + r"\par" for n in grid.notes]
    return "\n".join(lines + ["}"]) + "\n"


def _latex_cell(c: Text) -> str:
    core = latex_escape(c.core.replace("-", "−") if c.signed else c.core)
    if c.reference:
        return rf"\textit{{{core}}}"
    text = (rf"\textbf{{{core}}}" if c.best else core) + (CFG.mark_latex if c.mark else "")
    return text + ("" if c.n is None else rf" {{\scriptsize (n={c.n})}}")
