"""Result tables of the experiments: ours beside the paper's numbers, with a paired significance test.

Every experiment renders through `ResultTable` + `write_tables`, so all tables read the same
way (`bench.tables.cells` computes the cells, `bench.tables.render` prints them, as for `bench
table`). This module builds the grid of runs behind a table, reads their records, and names things
as the paper prints them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.experiments.base import Variant
from bench.records import is_number, read_record
from bench.store import atomic_write_bytes, atomic_write_json
from bench.tables.cells import CFG, PERCENT, Cell, CellStats, ResultTable, TableConfig, summarise, table_to_json
from bench.tables.render import footnotes, render_result

if TYPE_CHECKING:
    from bench.experiments.base import ExperimentContext
    from bench.runner import RunSpec

__all__ = ["CFG", "Cell", "CellStats", "Column", "ResultTable", "TableConfig", "collect", "column_label",
           "footnotes", "grid", "method_label", "ordered_runs", "summarise", "trivial_references", "write_tables"]


def collect(ctx: "ExperimentContext", specs_by_cell: dict[Cell, list["RunSpec"]],
            metric_by_column: dict[str, str]) -> dict[Cell, dict[int, float]]:
    """{(row, column): {seed: metric in percent}} from the finished records (missing runs left out)."""
    values: dict[Cell, dict[int, float]] = {}
    records: dict[Path, dict[str, Any] | None] = {}  # a run backs one cell per metric: read it once
    for (row, col), specs in specs_by_cell.items():
        metric = metric_by_column[col]
        for spec in specs:
            if spec.record_path not in records:
                records[spec.record_path] = read_record(spec.record_path)
            record = records[spec.record_path]
            if record is None:
                continue
            ctx.mark_read(spec.run_id)
            if metric not in record["metrics"]:
                raise BenchError(f"{spec.record_path}: metrics.{metric}: missing, but column {col!r} of "
                                 f"{ctx.name} needs it (known: {', '.join(sorted(record['metrics']))})")
            if is_number(record["metrics"][metric]):  # null: a score that was undefined for this run
                values.setdefault((row, col), {})[int(record["seed"])] = PERCENT * float(record["metrics"][metric])
    return values


def trivial_references(ctx: "ExperimentContext", columns: list["Column"]) -> dict[str, dict[str, float]]:
    """The `trivial` reference row (bench.trivial) of the columns whose data set the sweep names:
    {"trivial": {column label: metric in percent}}; empty when no column can be scored."""
    from bench.trivial import CFG as TRIVIAL, cached_scores

    cells = {}
    for col in columns:
        entry = ctx.entry(col.dataset)
        if entry is not None:
            cells[col.label] = ((col.dataset, entry.root, col.fraction), col.metric)
    scores = cached_scores(ctx.sweep.output, [cell for cell, _ in cells.values()])
    row = {label: PERCENT * scores[cell]["metrics"][metric] for label, (cell, metric) in cells.items()
           if cell in scores and is_number(scores[cell]["metrics"].get(metric))}
    return {TRIVIAL.method: row} if row else {}


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


def write_tables(table: ResultTable, ctx: "ExperimentContext", stem: str = "table") -> list[Path]:
    """stem.md, stem.tex, stem.csv and the table's data, stem.json (which `bench report` renders;
    with `runs`, the run ids of the records read so far), under results/NAME/; the paths
    written. The context's notes become footnotes too."""
    table = replace(table, notes=table.notes + [n for n in ctx.notes if n not in table.notes])
    stats = summarise(table)
    paths = []
    for ext, text in render_result(table, stats, footnotes(table, stats)).items():
        path = ctx.path(f"{stem}.{ext}")
        atomic_write_bytes(path, text.encode("utf-8"))
        paths.append(path)
    path = ctx.path(f"{stem}.json")
    atomic_write_json(path, {**table_to_json(table), "runs": list(ctx.read)})
    return paths + [path]


# --- names as the paper prints them ---------------------------------------------------------------
METHOD_LABELS = {"unet": "UNet", "unetpp": "UNet++", "swin_unetr": "Swin UNETR", "attunet": "AttUNet",
                 "uctransnet": "UCTransNet", "medt": "MedT", "mae": "MAE", "ddpm": "DDPM", "mdm": "MDM",
                 "swav": "SwAV", "swavw2": "SwAVw2", "maskdm": "MaskDM", "datasetgan": "DatasetGAN",
                 "datasetddpm": "DatasetDDPM"}
DATASET_LABELS = {"glas": "GlaS", "monuseg": "MoNuSeg", "ffhq34": "FFHQ-34", "celeba19": "CelebA-19",
                  "synthetic-glands": "synthetic-glands"}
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "aji": "AJI", "aji_plus": "AJI+",
                 "dice_paper": "Dice (paper-compatible)", "iou_paper": "IoU (paper-compatible)",
                 "aji_paper": "AJI (paper-compatible)", "miou": "mIoU"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def column_label(dataset: str, fraction: float, metric: str, with_fraction: bool = True) -> str:
    """e.g. 'GlaS 10% IoU' (or 'FFHQ-34 mIoU' where a table has one label fraction)."""
    parts = [DATASET_LABELS.get(dataset, dataset)]
    if with_fraction:
        parts.append(f"{100 * fraction:g}%")
    return " ".join(parts + [METRIC_LABELS.get(metric, metric)])
