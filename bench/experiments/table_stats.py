"""The numbers a result table shows: mean, sample std, n, the published value, the difference,
the best per column, and a paired Wilcoxon signed-rank test against that best.

Pairing by seed matters: rows of one seed share the labelled subset, which moves every method
the same way, so the test runs over the seeds both rows share.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable

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


@dataclass
class ResultTable:
    """rows x columns; values[(row, column)] = {seed: value in percent}; published = (mean, std).

    A published std of NaN means the paper printed none. `notes` become footnotes.
    `references` = {row label: {column: value in percent}}: rows printed after the methods that are
    never trained (the trivial predictor); they take no part in the best mark or the tests.
    """

    rows: list[str]
    columns: list[str]
    values: dict[Cell, dict[int, float]]
    published: dict[Cell, tuple[float, float]] = field(default_factory=dict)
    higher_is_better: bool = True
    title: str = ""
    notes: list[str] = field(default_factory=list)
    references: dict[str, dict[str, float]] = field(default_factory=dict)


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


def seed_mean_std(by_seed: dict[int, float] | None) -> tuple[float, float]:
    """Mean and sample std over seeds of one plotted point: (nan, nan) with no seed, std 0 for one
    (a figure draws no error bar there, where a table prints none)."""
    vals = list((by_seed or {}).values())
    if not vals:
        return math.nan, math.nan
    return _mean(vals), _std(vals) or 0.0
