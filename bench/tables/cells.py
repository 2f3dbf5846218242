"""Records into table cells: mean, sample std and n, beside the published numbers (REFERENCE §9).

The one place where a table's numbers are made; `bench.tables.render` prints them. Two shapes:
- a `ResultTable` (the experiments): rows (methods, variants) x columns (a metric of a data set at
  a fraction), each cell {seed: value}; `summarise` adds the difference to the paper, the best mean
  of each column and a paired Wilcoxon signed-rank test against it. Pairing by seed matters: rows
  of one seed share the labelled subset, which moves every method the same way.
- `aggregate` (`bench table`, the report's "All records"): one `RecordRow` per cell (data set,
  fraction, method) under one configuration (preset and the hash of every resolved config field,
  the hash a run id ends with), one cell per metric. Records of different configurations are never
  averaged together, and n counts the records behind that row only.

Values are percent. std is the sample std (ddof = 1), None for a single value: undefined, never 0.
`trivial` rows (bench.trivial) are reference constants, never trained: a value, no n or std.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from bench.provenance import SHORT_HASH
from bench.tables.paper import published_beside

Cell = tuple[str, str]  # (row, column)
PERCENT = 100.0         # records hold fractions, tables show percent
CELL = ["dataset", "fraction", "method"]
CONFIG = ["preset", "config"]   # besides the cell, what determines a result
KEY = CELL + CONFIG
METRIC_ORDER = ["dice", "dice_paper", "iou", "iou_paper", "aji", "aji_plus", "aji_paper", "miou"]
REFERENCE_PRESET = "reference"  # the preset column of a trivial row
SOURCE = "source"  # the key a record read from a `--reference` folder is tagged with: that folder
OWN = "sweep"      # the source of the sweep's own records
UNKNOWN = "unknown"
JSON_KIND = "bench.ResultTable"  # marks a table's data file (`write_tables`' stem.json)


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


@dataclass(frozen=True)
class CellStats:
    """What one cell shows. std is None for one value; p is None when no test was made (`test`
    says why); best, p and significant are set by `summarise` only."""

    mean: float | None
    std: float | None
    n: int
    seeds: tuple[int, ...] = ()
    published: tuple[float, float] | None = None  # (mean, std); std NaN where the paper printed none
    diff: float | None = None
    best: bool = False
    p: float | None = None
    significant: bool = False
    test: str = ""


def cell_stats(values: Iterable[float], seeds: Iterable[int] = (),
               published: tuple[float, float] | None = None) -> CellStats:
    """Mean, sample std and n of one cell's values (one per seed), and the difference to the paper."""
    vals = list(values)
    mean = _mean(vals) if vals else None
    return CellStats(mean=mean, std=_std(vals), n=len(vals), seeds=tuple(sorted(seeds)), published=published,
                     diff=(mean - published[0]) if mean is not None and published is not None else None)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float | None:
    """Sample std (ddof=1); None for fewer than two values, where it is undefined."""
    if len(values) < 2:
        return None
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def seed_mean_std(by_seed: dict[int, float] | None) -> tuple[float, float]:
    """Mean and sample std over seeds of one plotted point: (nan, nan) with no seed, std 0 for one
    (a figure draws no error bar there, where a table says the std is undefined)."""
    s = cell_stats((by_seed or {}).values())
    return (math.nan, math.nan) if s.mean is None else (s.mean, s.std or 0.0)


# --- the experiments' tables ---------------------------------------------------------------------
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


def summarise(table: ResultTable, cfg: TableConfig = CFG) -> dict[Cell, CellStats]:
    """`cell_stats` of every cell, plus the column's best and the test against it."""
    out: dict[Cell, CellStats] = {}
    pick = max if table.higher_is_better else min
    for col in table.columns:
        vals = {row: table.values.get((row, col)) or {} for row in table.rows}
        cells = {row: cell_stats(vals[row].values(), vals[row], table.published.get((row, col)))
                 for row in table.rows}
        means = [s.mean for s in cells.values() if s.mean is not None]
        best_mean = pick(means) if means else None
        ref = next((r for r in table.rows if cells[r].mean == best_mean), None) if means else None
        for row, s in cells.items():
            p, test = _compare(vals[ref], vals[row], ref, row, cfg) if vals[row] and ref else (None, "")
            out[(row, col)] = replace(s, best=s.mean is not None and s.mean == best_mean, p=p,
                                      significant=p is not None and p < cfg.alpha, test=test)
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


def table_to_json(table: ResultTable) -> dict[str, Any]:
    """The table's data (what its renderings show), for the report to render again. Lists of
    pairs, not objects, keep every order (JSON objects are written with sorted keys)."""
    def pub(p: tuple[float, float]) -> list[float | None]:
        return [p[0], None if math.isnan(p[1]) else p[1]]

    return {"kind": JSON_KIND, "rows": table.rows, "columns": table.columns,
            "values": [[r, c, [[s, v] for s, v in by_seed.items()]] for (r, c), by_seed in table.values.items()],
            "published": [[r, c, pub(p)] for (r, c), p in table.published.items()],
            "higher_is_better": table.higher_is_better, "title": table.title, "notes": table.notes,
            "references": [[row, list(by_col.items())] for row, by_col in table.references.items()]}


def table_from_json(data: dict[str, Any]) -> ResultTable:
    """The inverse of `table_to_json`; KeyError, TypeError or ValueError on anything else."""
    if data.get("kind") != JSON_KIND:
        raise KeyError("kind")
    return ResultTable(
        rows=[str(r) for r in data["rows"]], columns=[str(c) for c in data["columns"]],
        values={(r, c): {int(s): float(v) for s, v in pairs} for r, c, pairs in data["values"]},
        published={(r, c): (float(m), math.nan if s is None else float(s)) for r, c, (m, s) in data["published"]},
        higher_is_better=bool(data["higher_is_better"]), title=str(data["title"]),
        notes=[str(n) for n in data["notes"]],
        references={row: {c: float(v) for c, v in pairs} for row, pairs in data["references"]})


# --- `bench table`: records by cell and configuration --------------------------------------------
@dataclass(frozen=True)
class RecordRow:
    """One cell under one configuration; `cells[metric]` its numbers. A reference row (trivial)
    has its rule as `config`, n = 1 and the bare values (std None)."""

    dataset: str
    fraction: float
    method: str
    preset: str
    config: str
    n: int
    reference: bool
    cells: dict[str, CellStats]
    wall_s: float | None = None  # the records' summed total_s: the cell's cost, its pre-training included once
    working_side: str = ""       # the long side the runs worked at (`working_side`)
    source: str = ""  # the --reference folder its records were read from ("": the sweep's own)


def config_id(record: dict[str, Any]) -> str:
    """The record's config hash, shortened as in run ids; from the run id for older records."""
    prov = record.get("provenance")
    full = prov.get("config_hash") if isinstance(prov, dict) else None
    if isinstance(full, str) and full:
        return full[:SHORT_HASH]
    run_id = record.get("run_id")
    tail = run_id.rsplit("-", 1)[-1] if isinstance(run_id, str) and "-" in run_id else ""
    return tail if len(tail) == SHORT_HASH else UNKNOWN


def tabulable(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """(records a table can place, how many were left out for lacking a cell field or metrics)."""
    records = list(records)
    usable = [r for r in records if all(k in r for k in (*CELL, "seed")) and isinstance(r.get("metrics"), dict)]
    return usable, len(records) - len(usable)


def aggregate(records: Iterable[dict[str, Any]], references: Iterable[dict[str, Any]] = ()) -> list[RecordRow]:
    """One row per cell and configuration, sorted by data set, fraction (largest first), then the
    methods before their cell's reference rows; the published value where the paper has one, beside
    the metric that restates the paper's computation where the records hold it (bench.tables.paper)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        key = (r["dataset"], r["fraction"], r["method"], str(r.get("preset", UNKNOWN)), config_id(r),
               str(r.get(SOURCE, "")))
        groups.setdefault(key, []).append(r)
    rows = []
    for (dataset, fraction, method, preset, config, source), group in sorted(groups.items()):
        cells = {}
        names = metric_order(k for r in group for k in r["metrics"])
        for m in names:
            have = [r for r in group if _number(r["metrics"].get(m))]
            if have:
                cells[m] = cell_stats([PERCENT * r["metrics"][m] for r in have], [r["seed"] for r in have],
                                      published_beside(dataset, fraction, method, m, names))
        rows.append(RecordRow(dataset, fraction, method, preset, config, len(group), False, cells, _wall(group),
                              working_side(group), source))
    for ref in references:
        cells = {m: CellStats(mean=PERCENT * v, std=None, n=1) for m, v in ref["metrics"].items() if _number(v)}
        rows.append(RecordRow(ref["dataset"], ref["fraction"], ref["method"], REFERENCE_PRESET, ref["rule"],
                              1, True, cells))
    return sorted(rows, key=lambda r: (r.dataset, -r.fraction, r.reference, r.method, r.preset, r.config, r.source))


def _number(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _wall(group: list[dict[str, Any]]) -> float | None:
    """Seconds the cell's runs took, summed (None when no record says): a pre-trained backbone is in
    the total of the run that built it, so a method's cells sum to what it cost."""
    walls = [t["total_s"] for r in group if isinstance(t := r.get("timings"), dict) and _number(t.get("total_s"))]
    return sum(walls) if walls else None


def working_side(group: list[dict[str, Any]]) -> str:
    """The long side (px) the cell's runs resized the test images to, as their records'
    `extra.working_scale` states it: "256", a range "512-700", "+ objects" where the data set's
    objects raised it above the preset's cap (bench.data.scale), "fixed" for a fixed network input.
    Records from before the scale was recorded show their config's cap ("<=256") or fixed input;
    "" if none says."""
    texts = []
    for r in group:
        extra, config = r.get("extra"), r.get("config")
        scale = extra.get("working_scale") if isinstance(extra, dict) else None
        if isinstance(scale, dict) and isinstance(scale.get("side"), list) and len(scale["side"]) == 2:
            lo, hi = scale["side"]
            text = f"{lo}" if lo == hi else f"{lo}-{hi}"
            text += " fixed" if scale.get("input_size") else " + objects" if scale.get("raised") else ""
        elif isinstance(config, dict) and isinstance(config.get("input_size"), int) and config["input_size"]:
            text = f"{config['input_size']} fixed"
        elif isinstance(config, dict) and isinstance(config.get("max_side"), int):
            text = f"<={config['max_side']}"
        else:
            continue
        if text not in texts:
            texts.append(text)
    return ", ".join(texts)


def metric_order(names: Iterable[str]) -> list[str]:
    """METRIC_ORDER first, then any other metric alphabetically."""
    names = set(names)
    return [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))


def metrics_of(rows: list[RecordRow]) -> list[str]:
    return metric_order(m for r in rows for m in r.cells)
