"""Table 1: GlaS (Dice, IoU) and MoNuSeg (Dice, AJI) with 100% and 10% of the labels.

Rows are the paper's nine methods, then every other method bench.toml lists, so a new plugin
shows where it ranks. MoNuSeg gets two AJI columns: `aji`, the organisers' instance-level AJI
(instances = connected components of the predicted foreground), and `aji_paper`, what the
paper's code computed under that name (foreground IoU) and so the column the published numbers
belong to (REFERENCE §2). A data set without a root in bench.toml is left out, with a note.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.experiments.base import Experiment, ExperimentContext, Variant, experiment
from bench.experiments.tables import (
    Column,
    ResultTable,
    collect,
    column_label,
    grid,
    method_label,
    ordered_runs,
    trivial_references,
    write_tables,
)
from bench.runner import RunSpec
from bench.tables import TABLE1_METHODS, published


@dataclass(frozen=True)
class Table1Config:
    """The paper's grid (not the sweep's label_fractions: the table is defined by these)."""

    fractions: tuple[float, ...] = (1.0, 0.1)
    metrics: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("glas", ("dice", "iou")),
        ("monuseg", ("dice", "aji", "aji_paper")),
    )


CFG = Table1Config()
AJI_NOTE = ("AJI: the organisers' instance-level AJI (instances = connected components of the foreground). "
            "AJI (paper-compatible): foreground IoU, which the paper's code reports as AJI; the published "
            "AJI is compared with it.")


def methods(ctx: ExperimentContext) -> list[str]:
    """The nine printed methods, then bench.toml's other methods in their listed order."""
    return list(TABLE1_METHODS) + [m for m in ctx.sweep.methods if m not in TABLE1_METHODS]


def variants(ctx: ExperimentContext) -> list[Variant]:
    return [Variant(method_label(m), m) for m in methods(ctx)]


def columns(ctx: ExperimentContext) -> list[Column]:
    return [Column(column_label(d, f, m), d, f, m)
            for d, metrics in CFG.metrics if ctx.available(d) for f in CFG.fractions for m in metrics]


@experiment
class Table1(Experiment):
    name = "table1"
    title = "Table 1: GlaS (Dice, IoU) and MoNuSeg (Dice, AJI), 100% and 10% labels"

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        return ordered_runs(grid(ctx, variants(ctx), columns(ctx)))

    def write(self, ctx: ExperimentContext) -> list[Path]:
        cols = columns(ctx)
        rows = variants(ctx)
        cells = grid(ctx, rows, cols)
        values = collect(ctx, cells, {c.label: c.metric for c in cols})
        pub = {(v.label, c.label): score for v in rows for c in cols
               if (score := published(c.dataset, c.fraction, v.method, c.metric)) is not None}
        notes = [AJI_NOTE] if any(c.metric == "aji_paper" for c in cols) else []
        table = ResultTable(rows=[v.label for v in rows], columns=[c.label for c in cols], values=values,
                            published=pub, title=self.title, notes=notes,
                            references=trivial_references(ctx, cols))
        return write_tables(table, ctx)
