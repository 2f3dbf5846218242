"""Aggregate run records into mean ± std per cell, beside the published numbers (REFERENCE §9)."""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from bench.published import published

CELL = ["dataset", "fraction", "method"]
METRIC_ORDER = ["dice", "iou", "aji", "aji_plus", "aji_paper", "miou"]


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: the cell, the seed and every data-set-level metric in percent."""
    rows = [{"dataset": r["dataset"], "fraction": r["fraction"], "method": r["method"],
             "seed": r["seed"], **{k: 100.0 * v for k, v in r["metrics"].items()}} for r in records]
    return pd.DataFrame(rows)


def aggregate(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """mean, std (sample, ddof=1) and n per cell, plus the published mean±std where there is one."""
    frame = records_frame(records)
    if frame.empty:
        return pd.DataFrame(columns=CELL + ["n"])
    metrics = [m for m in METRIC_ORDER if m in frame.columns] + sorted(
        c for c in frame.columns if c not in METRIC_ORDER + CELL + ["seed"])
    rows = []
    for key, group in frame.groupby(CELL, sort=True):
        row: dict[str, Any] = dict(zip(CELL, key))
        row["n"] = int(group["seed"].nunique())
        for m in metrics:
            values = group[m].dropna()
            if values.empty:
                continue
            row[f"{m}_mean"] = values.mean()
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else 0.0
            paper = published(row["dataset"], row["fraction"], row["method"], m)
            row[f"{m}_paper"] = f"{paper[0]:.2f}±{paper[1]:.2f}" if paper else ""
        rows.append(row)
    return pd.DataFrame(rows)


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.4f")
    pretty = _pretty(table)
    if fmt == "latex":
        return pretty.to_latex(index=False, escape=True)
    return _markdown(pretty)


def _pretty(table: pd.DataFrame) -> pd.DataFrame:
    """mean ± std cells for humans; the published value in its own column."""
    out = table[CELL + ["n"]].copy() if not table.empty else pd.DataFrame(columns=CELL + ["n"])
    for col in table.columns:
        if col.endswith("_mean"):
            m = col[: -len("_mean")]
            out[m] = [f"{a:.2f} ± {b:.2f}" for a, b in zip(table[col], table[f"{m}_std"])]
            if table[f"{m}_paper"].astype(bool).any():
                out[f"{m} (paper)"] = table[f"{m}_paper"]
    return out


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub table without the optional `tabulate` dependency."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
