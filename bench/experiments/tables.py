"""Result tables of the experiments: ours beside the paper's numbers, with a paired significance test.

Every experiment renders through `ResultTable` + `write_tables`, so all tables read the same way:
ours as mean ± sample std over n seeds, the published mean ± std and the difference where the
paper printed one, the best mean per column in bold, and a dagger on rows whose gap to that best
is significant in a paired Wilcoxon signed-rank test over the seeds both rows share (pairing by
seed matters: rows of one seed share the labelled subset, which moves every method the same way).
The CSV holds every number of the table, one line per (row, column), for scripts.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from bench.errors import BenchError
from bench.experiments.base import Variant
from bench.records import read_record
from bench.store import atomic_write_bytes

if TYPE_CHECKING:
    from bench.experiments.base import ExperimentContext
    from bench.runner import RunSpec

Cell = tuple[str, str]  # (row, column)


@dataclass(frozen=True)
class TableConfig:
    """The test's settings and the printed precision: the one place for these numbers."""

    alpha: float = 0.05      # a gap to the column's best is marked when p < alpha
    # With fewer pairs the exact two-sided p can never drop below 0.05 (6 pairs: 2/2^6 = 0.031;
    # 5 pairs: 0.0625), so a test would only ever say "not significant": it is left out instead.
    min_pairs: int = 6
    decimals: int = 2        # percent values as printed in the paper
    mark: str = "†"
    mark_latex: str = r"$^\dagger$"


CFG = TableConfig()
DASH = "—"


@dataclass
class ResultTable:
    """rows x columns; values[(row, column)] = {seed: value in percent}; published = (mean, std).

    A published std of NaN means the paper printed none. `notes` become footnotes.
    """

    rows: list[str]
    columns: list[str]
    values: dict[Cell, dict[int, float]]
    published: dict[Cell, tuple[float, float]] = field(default_factory=dict)
    higher_is_better: bool = True
    title: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CellStats:
    """What one (row, column) shows; p is None when no test was made (see `test`)."""

    mean: float | None
    std: float | None
    n: int
    seeds: tuple[int, ...]
    published: tuple[float, float] | None
    diff: float | None
    best: bool
    p: float | None
    significant: bool
    test: str


def summarise(table: ResultTable, cfg: TableConfig = CFG) -> dict[Cell, CellStats]:
    """Mean, std, published, difference, best and test for every cell of the table."""
    out: dict[Cell, CellStats] = {}
    for col in table.columns:
        vals = {row: table.values.get((row, col)) or {} for row in table.rows}
        means = {row: _mean(v.values()) for row, v in vals.items() if v}
        pick = max if table.higher_is_better else min
        best_mean = pick(means.values()) if means else None
        ref = next((r for r in table.rows if means.get(r) == best_mean), None) if means else None
        for row in table.rows:
            v = vals[row]
            mean = means.get(row)
            pub = table.published.get((row, col))
            p, test = (None, "") if not v else _compare(vals[ref], v, ref, row, cfg) if ref else (None, "")
            out[(row, col)] = CellStats(
                mean=mean, std=_std(list(v.values())) if v else None, n=len(v), seeds=tuple(sorted(v)),
                published=pub, diff=(mean - pub[0]) if mean is not None and pub is not None else None,
                best=mean is not None and mean == best_mean, p=p,
                significant=p is not None and p < cfg.alpha, test=test,
            )
    return out


def wilcoxon_p(a: list[float], b: list[float]) -> float:
    """Two-sided paired Wilcoxon signed-rank p (scipy); 1.0 when every pair is equal."""
    from scipy.stats import wilcoxon

    if all(x == y for x, y in zip(a, b)):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's note on ties/zeros; p is still defined
        return float(wilcoxon(a, b).pvalue)


def _compare(ref: dict[int, float], other: dict[int, float], ref_row: str, row: str,
             cfg: TableConfig) -> tuple[float | None, str]:
    if row == ref_row:
        return None, "column best (reference)"
    shared = sorted(set(ref) & set(other))
    if len(shared) < cfg.min_pairs:
        return None, f"no test: {len(shared)} paired seeds < {cfg.min_pairs}"
    p = wilcoxon_p([ref[s] for s in shared], [other[s] for s in shared])
    return p, f"wilcoxon vs {ref_row} over {len(shared)} seeds"


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals)


def _std(values: list[float]) -> float | None:
    """Sample std (ddof=1); None for a single seed, where it is undefined."""
    if len(values) < 2:
        return None
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def collect(ctx: "ExperimentContext", specs_by_cell: dict[Cell, list["RunSpec"]],
            metric_by_column: dict[str, str]) -> dict[Cell, dict[int, float]]:
    """{(row, column): {seed: metric in percent}} from the finished records (missing runs left out)."""
    values: dict[Cell, dict[int, float]] = {}
    for (row, col), specs in specs_by_cell.items():
        metric = metric_by_column[col]
        for spec in specs:
            record = read_record(spec.record_path)
            if record is None:
                continue
            if metric not in record["metrics"]:
                raise BenchError(f"{spec.record_path}: metrics.{metric}: missing, but column {col!r} of "
                                 f"{ctx.name} needs it (known: {', '.join(sorted(record['metrics']))})")
            values.setdefault((row, col), {})[int(record["seed"])] = 100.0 * float(record["metrics"][metric])
    return values


# --- building the grid of runs -----------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """A column of a table: one metric of one data set at one label fraction."""

    label: str
    dataset: str
    fraction: float
    metric: str


def grid(ctx: "ExperimentContext", variants: list[Variant], columns: list[Column],
         extra_params: dict[str, dict[str, dict[str, Any]]] | None = None) -> dict[Cell, list["RunSpec"]]:
    """{(variant label, column label): specs}; `extra_params[dataset][method]` lies under the params.

    Precedence: the variant's params, then bench.toml's `[params.METHOD]`, then the data set's
    extra params (e.g. the paper's natural-image settings). Cells are listed data set by data set,
    variant by variant, fraction by fraction, so runs sharing a backbone follow each other.
    """
    out: dict[Cell, list[RunSpec]] = {}
    for dataset in dict.fromkeys(c.dataset for c in columns):
        base = (extra_params or {}).get(dataset, {})
        for v in variants:
            params = {**base.get(v.method, {}), **ctx.sweep.params.get(v.method, {}), **v.params}
            for col in (c for c in columns if c.dataset == dataset):
                out[(v.label, col.label)] = ctx.specs(Variant(v.label, v.method, params), dataset, col.fraction)
    return out


def ordered_runs(cells: dict[Cell, list["RunSpec"]]) -> list["RunSpec"]:
    """Every distinct run of the grid once (the columns of one data set and fraction share runs)."""
    seen: dict[str, RunSpec] = {}
    for specs in cells.values():
        for spec in specs:
            seen.setdefault(spec.run_id, spec)
    return list(seen.values())


# --- rendering -----------------------------------------------------------------------------------
def write_tables(table: ResultTable, ctx: "ExperimentContext", stem: str = "table") -> list[Path]:
    """stem.md, stem.tex and stem.csv under results/NAME/; the paths written."""
    stats = summarise(table)
    notes = footnotes(table, stats) + [n for n in ctx.notes if n not in table.notes]
    files = {"md": render_markdown(table, stats, notes), "tex": render_latex(table, stats, notes),
             "csv": render_csv(table, stats)}
    paths = []
    for ext, text in files.items():
        path = ctx.path(f"{stem}.{ext}")
        atomic_write_bytes(path, text.encode("utf-8"))
        paths.append(path)
    return paths


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
    return lines + list(table.notes)


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
    return buf.getvalue()


def _f(x: float | None) -> str:
    return "" if x is None or math.isnan(x) else format(x, ".10g")


# --- names as the paper prints them ---------------------------------------------------------------
METHOD_LABELS = {"unet": "UNet", "unetpp": "UNet++", "swin_unetr": "Swin UNETR", "attunet": "AttUNet",
                 "uctransnet": "UCTransNet", "medt": "MedT", "mae": "MAE", "ddpm": "DDPM", "mdm": "MDM",
                 "swav": "SwAV", "swavw2": "SwAVw2", "maskdm": "MaskDM", "datasetgan": "DatasetGAN",
                 "datasetddpm": "DatasetDDPM"}
DATASET_LABELS = {"glas": "GlaS", "monuseg": "MoNuSeg", "ffhq34": "FFHQ-34", "celeba19": "CelebA-19",
                  "synthetic-glands": "synthetic-glands"}
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "aji": "AJI", "aji_plus": "AJI+",
                 "aji_paper": "AJI (paper-compatible)", "miou": "mIoU"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def column_label(dataset: str, fraction: float, metric: str, with_fraction: bool = True) -> str:
    """e.g. 'GlaS 10% IoU' (or 'FFHQ-34 mIoU' where a table has one label fraction)."""
    parts = [DATASET_LABELS.get(dataset, dataset)]
    if with_fraction:
        parts.append(f"{100 * fraction:g}%")
    return " ".join(parts + [METRIC_LABELS.get(metric, metric)])
