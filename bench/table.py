"""Aggregate run records into mean ± std per configuration, beside the published numbers (REFERENCE §9).

A row is one cell (data set, fraction, method) under one configuration (preset and the hash of
every resolved config field, the same hash a run id ends with): records of different
configurations are never averaged together, and n counts the records behind that row only.
`trivial` rows (bench.trivial) are reference constants, never trained, one per (data set,
fraction), printed after the methods of their cell.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

from bench.provenance import SHORT_HASH
from bench.published import published

CELL = ["dataset", "fraction", "method"]
CONFIG = ["preset", "config"]   # besides the cell, what determines a result
KEY = CELL + CONFIG
METRIC_ORDER = ["dice", "iou", "aji", "aji_plus", "aji_paper", "miou"]
REFERENCE_PRESET = "reference"  # the preset column of a trivial row
UNKNOWN = "unknown"
REFERENCE_NOTE = ("trivial: reference constant predictor, never trained, scored on the test set "
                  "(config names its rule: all-foreground = every pixel foreground; pixel-mode-s0 = "
                  "every pixel the most frequent class at its position in seed 0's labelled images).")


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


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: the cell, its configuration, the seed and every metric in percent."""
    rows = [{"dataset": r["dataset"], "fraction": r["fraction"], "method": r["method"],
             "preset": str(r.get("preset", UNKNOWN)), "config": config_id(r), "seed": r["seed"],
             **{k: 100.0 * v for k, v in r["metrics"].items()}} for r in records]
    return pd.DataFrame(rows)


def aggregate(records: Iterable[dict[str, Any]], references: Iterable[dict[str, Any]] = ()) -> pd.DataFrame:
    """mean, std (sample, ddof=1; NaN for one record) and n per cell and configuration, the published
    mean and std where there is one, and a `reference` flag (True for the trivial rows)."""
    frame = records_frame(records)
    refs = list(references)
    if frame.empty and not refs:
        return pd.DataFrame(columns=KEY + ["n", "reference"])
    rows: list[dict[str, Any]] = []
    if not frame.empty:
        metrics = _metric_columns(frame)
        for key, group in frame.groupby(KEY, sort=True):
            row: dict[str, Any] = {**dict(zip(KEY, key)), "n": len(group), "reference": False}
            for m in metrics:
                values = group[m].dropna()
                if not values.empty:
                    row[f"{m}_mean"] = values.mean()
                    row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
                    paper = published(row["dataset"], row["fraction"], row["method"], m)
                    row[f"{m}_published_mean"], row[f"{m}_published_std"] = paper or (math.nan, math.nan)
            rows.append(row)
    for ref in refs:
        row = {"dataset": ref["dataset"], "fraction": ref["fraction"], "method": ref["method"],
               "preset": REFERENCE_PRESET, "config": ref["rule"], "n": 1, "reference": True}
        for m, v in ref["metrics"].items():
            row[f"{m}_mean"], row[f"{m}_std"] = 100.0 * v, math.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out = out.sort_values(["dataset", "fraction", "reference", "method", "preset", "config"],
                          ascending=[True, False, True, True, True, True], kind="stable")
    return out[_ordered_columns(out)].reset_index(drop=True)


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    return [m for m in METRIC_ORDER if m in frame.columns] + sorted(
        c for c in frame.columns if c not in METRIC_ORDER + KEY + ["seed"])


def _ordered_columns(table: pd.DataFrame) -> list[str]:
    """The key, n, reference, then per metric (in METRIC_ORDER) mean, std, published mean and std."""
    names = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean") and "_published" not in c]
    metrics = [m for m in METRIC_ORDER if m in names] + sorted(m for m in names if m not in METRIC_ORDER)
    cols = KEY + ["n", "reference"]
    for m in metrics:
        cols += [c for c in (f"{m}_mean", f"{m}_std", f"{m}_published_mean", f"{m}_published_std")
                 if c in table.columns]
    return cols


def metrics_of(table: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in table.columns if c.endswith("_mean") and "_published" not in c]


def render(table: pd.DataFrame, fmt: str) -> str:
    """csv: every number (published values as `<metric>_published_mean/_std`); markdown, latex: for humans."""
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.4f")
    pretty = _pretty(table)
    if fmt == "latex":
        return pretty.to_latex(index=False, escape=True)
    note = "\n" + REFERENCE_NOTE + "\n" if not table.empty and table["reference"].any() else ""
    return _markdown(pretty) + note


def _pretty(table: pd.DataFrame) -> pd.DataFrame:
    """mean ± std cells for humans (mean alone for one record); the published value in its own column."""
    if table.empty:
        return pd.DataFrame(columns=KEY + ["n"])
    out = table[KEY + ["n"]].copy()
    out["method"] = [f"{m} (reference)" if ref else m for m, ref in zip(table["method"], table["reference"])]
    for m in metrics_of(table):
        out[m] = [_cell(a, b) for a, b in zip(table[f"{m}_mean"], table[f"{m}_std"])]
        pub = f"{m}_published_mean"
        if pub in table.columns and table[pub].notna().any():
            out[f"{m} (published)"] = [_cell(a, b) if not math.isnan(a) else "" for a, b in
                                       zip(table[pub], table[f"{m}_published_std"])]
    return out


def _cell(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{mean:.2f}" if std is None or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub table without the optional `tabulate` dependency."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
