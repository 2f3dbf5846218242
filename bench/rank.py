"""One method ranked against every other, cell by cell, with a paired test (`bench table --rank`).

The records are those of one configuration per method and cell (a sweep's own and its
`--reference` folders', bench.sweep_table), so every comparison is at the same preset, protocol
and data. Two methods are compared over the seeds they share with the same labelled subset (the
records' `labelled` names): a seed moves every method the same way, so the paired differences
are what tells two methods apart. The test is the two-sided Wilcoxon signed-rank test where there
are at least `TableConfig.min_pairs` pairs, else the paired t-test (with fewer pairs Wilcoxon's
exact p cannot fall below 0.05), and none below two pairs; its name is in every row.

The rank of the ranked method in a cell is 1 + the number of methods whose paired mean is above
its own on the seeds they share, out of the methods it shares a seed with; the others are listed
by their paired difference, best first. No correction for the many comparisons is made: a p
near alpha among a dozen tests is weak evidence, and the note under the table says so.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Iterable

from bench.tables.cells import CFG, OWN, PERCENT, SOURCE, TableConfig, wilcoxon_p
from bench.tables.formats import Grid, Head, Text, html_table, latex, markdown


@dataclass(frozen=True)
class Comparison:
    """The ranked method against `method` over their `pairs` shared seeds (values in percent)."""

    method: str
    source: str
    pairs: int
    own: float | None      # the ranked method's mean over those seeds
    other: float | None    # this method's mean over them
    diff: float | None     # own - other, points
    p: float | None
    test: str
    rank: int | None       # this method's place in the cell (None: no shared seed)


@dataclass(frozen=True)
class CellRanking:
    dataset: str
    fraction: float
    metric: str
    method: str
    source: str
    mean: float
    std: float | None
    n: int
    rank: int
    of: int
    comparisons: tuple[Comparison, ...]


def paired_test(a: list[float], b: list[float], cfg: TableConfig = CFG) -> tuple[float | None, str]:
    """(two-sided p, the test's name) of paired samples: Wilcoxon with `cfg.min_pairs` pairs or
    more, else the paired t-test; none below two pairs or where every difference is the same."""
    n = len(a)
    if n < 2:
        return None, f"none ({n} pair{'s' if n != 1 else ''})"
    diffs = [x - y for x, y in zip(a, b)]
    if n >= cfg.min_pairs:
        return wilcoxon_p(a, b), "wilcoxon"
    if max(diffs) == min(diffs):
        return (1.0, "paired t") if diffs[0] == 0 else (None, "paired t: constant difference, p undefined")
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_rel(a, b).pvalue), "paired t"


def _by_method(records: Iterable[dict[str, Any]], metric: str) -> dict[tuple[Any, ...], dict[str, dict[int, dict]]]:
    """{(dataset, fraction): {method: {seed: record}}} of the records that hold `metric`."""
    cells: dict[tuple[Any, ...], dict[str, dict[int, dict]]] = {}
    for r in records:
        value = r["metrics"].get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            continue
        by_seed = cells.setdefault((r["dataset"], float(r["fraction"])), {}).setdefault(r["method"], {})
        by_seed.setdefault(int(r["seed"]), r)
    return cells


def _pairs(own: dict[int, dict], other: dict[int, dict]) -> list[int]:
    """The seeds both have, with the same labelled subset where both records name it."""
    return [s for s in sorted(set(own) & set(other)) if _same_subset(own[s], other[s])]


def _same_subset(a: dict, b: dict) -> bool:
    la, lb = a.get("labelled"), b.get("labelled")
    return not (isinstance(la, list) and isinstance(lb, list)) or la == lb


def rank(records: Iterable[dict[str, Any]], method: str, metric: str, cfg: TableConfig = CFG) -> list[CellRanking]:
    """The ranking of `method` in every cell that has records of it."""
    out = []
    for (dataset, fraction), methods in sorted(_by_method(records, metric).items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        if method not in methods:
            continue
        own = methods[method]
        values = [PERCENT * r["metrics"][metric] for r in own.values()]
        comparisons = []
        for name, other in sorted(methods.items()):
            if name == method:
                continue
            seeds = _pairs(own, other)
            a = [PERCENT * own[s]["metrics"][metric] for s in seeds]
            b = [PERCENT * other[s]["metrics"][metric] for s in seeds]
            p, test = paired_test(a, b, cfg)
            mean_a, mean_b = (sum(a) / len(a), sum(b) / len(b)) if seeds else (None, None)
            diff = mean_a - mean_b if mean_a is not None and mean_b is not None else None
            comparisons.append(Comparison(name, _source(other), len(seeds), mean_a, mean_b, diff, p, test, None))
        ranked = sorted((c for c in comparisons if c.diff is not None), key=lambda c: (c.diff, c.method))
        place = 1 + sum(1 for c in ranked if c.diff is not None and c.diff < 0)
        placed = tuple(
            [replace(c, rank=i + 1 + (i + 1 >= place)) for i, c in enumerate(ranked)]
            + [c for c in comparisons if c.diff is None])
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        out.append(CellRanking(dataset, fraction, metric, method, _source(own), mean, std, len(values),
                               place, 1 + len(ranked), placed))
    return out


def _source(by_seed: dict[int, dict]) -> str:
    return str(next(iter(by_seed.values())).get(SOURCE) or OWN)


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{CFG.decimals}f}" if signed else f"{x:.{CFG.decimals}f}"


def ranking_grid(rankings: list[CellRanking], cfg: TableConfig = CFG) -> Grid:
    """One row per method and cell: the ranked method's own row (its mean ± std over all its seeds)
    in its place among the others (its and their means over the seeds they share, the
    difference, the test and p)."""
    if not rankings:
        return Grid([Head("")], [])
    first = rankings[0]
    head = [Head(k) for k in ("dataset", "fraction", "rank", "method", "source", "pairs",
                              f"{first.method} {first.metric}", f"other {first.metric}", "Δ (points)", "test", "p")]
    body = []
    for cell in rankings:
        key = [Text(cell.dataset), Text(f"{cell.fraction:g}")]
        own_row = key + [Text(f"{cell.rank} of {cell.of}", best=True), Text(cell.method, best=True),
                         Text(cell.source), Text(str(cell.n)),
                         Text(f"{_num(cell.mean)} ± {'n/a' if cell.std is None else _num(cell.std)}", best=True),
                         Text(""), Text(""), Text(""), Text("")]
        rows = []
        for c in cell.comparisons:
            significant = c.p is not None and c.p < cfg.alpha
            rows.append((c.rank or 10**6, key + [
                Text("—" if c.rank is None else str(c.rank)), Text(c.method), Text(c.source), Text(str(c.pairs)),
                Text(_num(c.own)), Text(_num(c.other)), Text(_num(c.diff, signed=True), mark=significant, signed=True),
                Text(c.test), Text("—" if c.p is None else f"{c.p:.3g}")]))
        rows.append((cell.rank, own_row))
        body += [row for _, row in sorted(rows, key=lambda x: x[0])]
    notes = [f"{first.method} against every other method of each cell, over the seeds both have with the same "
             f"labelled subset (pairs); Δ = {first.method} − other, in points of {first.metric} (percent); "
             f"rank: by the paired mean, 1 = best. Test: two-sided Wilcoxon signed-rank with {cfg.min_pairs} or "
             f"more pairs, else the paired t-test; {cfg.mark}: p < {cfg.alpha:g}, with no correction for the "
             "number of comparisons in a cell."]
    return Grid(head, body, f"{first.method} ranked by {first.metric}", notes, right=5)


def render_ranking(rankings: list[CellRanking], fmt: str) -> str:
    """`bench table --rank METHOD --format FMT`."""
    if fmt == "csv":
        return ranking_csv(rankings)
    writer = {"markdown": markdown, "latex": latex, "html": html_table}[fmt]
    return writer(ranking_grid(rankings))


def ranking_csv(rankings: list[CellRanking]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "fraction", "metric", "ranked", "method", "source", "rank", "of", "pairs",
                     "ranked_mean", "other_mean", "diff", "test", "p"])
    for cell in rankings:
        writer.writerow([cell.dataset, cell.fraction, cell.metric, cell.method, cell.method, cell.source,
                         cell.rank, cell.of, cell.n, _g(cell.mean), "", "", "", ""])
        for c in cell.comparisons:
            writer.writerow([cell.dataset, cell.fraction, cell.metric, cell.method, c.method, c.source,
                             "" if c.rank is None else c.rank, cell.of, c.pairs, _g(c.own), _g(c.other),
                             _g(c.diff), c.test, _g(c.p)])
    return buf.getvalue()


def _g(x: float | None) -> str:
    return "" if x is None else format(x, ".10g")
