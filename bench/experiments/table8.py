"""Table 8 (Appendix C): CIFAR-10 linear-probe top-1 accuracy of the pre-trained backbones.

Its runs are ordinary `RunSpec`s with `linear_probe` set (bench.linear_probe): the runner does
them and writes their records, the executors ship them (a Slurm sweep gets a pre-training job
per backbone and an array of probe runs, like any other), and `write` only reads the records.
"""
from __future__ import annotations

from pathlib import Path

from bench.experiments.base import Experiment, ExperimentContext, Variant, experiment
from bench.experiments.tables import ResultTable, write_tables
from bench.linear_probe import DATASET, LINEAR_PROBE_PRESETS, METRIC, backbone_overrides
from bench.runner import RunSpec
from bench.tables import ABLATIONS

COLUMN = "CIFAR-10 top-1"
METHODS = ("ddpm", "mdm")  # the rows of Table 8 this harness implements
# Printed rows: (method, variant) of bench.tables.paper's Table 8 cells -> the row label.
ROW_LABELS: dict[tuple[str, str], str] = {
    ("mocov1", "resnet50"): "MoCov1 (ResNet-50)",
    ("mocov2", ""): "MoCov2",
    ("simclr", ""): "SimCLR",
    ("simclrv2", "resnet101"): "SimCLRv2 (ResNet-101)",
    ("ddpm", "unet"): "DDPM (U-Net)",
    ("mdm", "unet"): "MDM (U-Net)",
}
OUR_ROWS = {"ddpm": ("ddpm", "unet"), "mdm": ("mdm", "unet")}


def probe_specs(ctx: ExperimentContext) -> list[RunSpec]:
    """Every method x seed of the linear probe at the sweep's preset (the backbone at 32 px)."""
    probe = LINEAR_PROBE_PRESETS[ctx.sweep.preset]
    return [spec for m in METHODS
            for spec in ctx.specs(Variant(m, m, backbone_overrides(probe)), DATASET, 1.0, linear_probe=probe)]


def published_cells() -> dict[tuple[str, str], float]:
    """(row label, column) -> the printed accuracy (Table 8 prints no std)."""
    return {(ROW_LABELS[(c.method, c.variant)], COLUMN): c.mean for c in ABLATIONS["table8"]
            if (c.method, c.variant) in ROW_LABELS}


@experiment
class Table8(Experiment):
    name = "table8"
    title = "Table 8: CIFAR-10 linear probe (top-1) of frozen pre-trained backbones"

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        return probe_specs(ctx) if ctx.available(DATASET) else []

    def write(self, ctx: ExperimentContext) -> list[Path]:
        if not ctx.available(DATASET):
            return []
        values: dict[tuple[str, str], dict[int, float]] = {}
        sizes: set[tuple[int, int]] = set()
        for record in ctx.records(probe_specs(ctx)):
            row = ROW_LABELS[OUR_ROWS[record["method"]]]
            values.setdefault((row, COLUMN), {})[int(record["seed"])] = 100.0 * float(record["metrics"][METRIC])
            sizes.add((int(record["n_train"]), int(record["n_test"])))
        published = {cell: (mean, float("nan")) for cell, mean in published_cells().items()}
        table = ResultTable(rows=list(dict.fromkeys(ROW_LABELS.values())), columns=[COLUMN], values=values,
                            published=published, title=self.title, notes=notes(ctx.sweep.preset, sizes))
        return write_tables(table, ctx)


def notes(preset: str, sizes: set[tuple[int, int]]) -> list[str]:
    """What the reader must know to compare the rows: who was run here, on how much data."""
    ours = ", ".join(ROW_LABELS[OUR_ROWS[m]] for m in METHODS)
    data = "; ".join(f"{a} train / {b} test images" for a, b in sorted(sizes)) or "no finished runs"
    return [
        f"Run here: {ours} (preset {preset}: {data}); the backbone is pre-trained on the CIFAR-10 train "
        "images at 32 px, frozen, each feature block is averaged over space and one linear layer is fit.",
        "Other rows: published numbers only (those methods are not part of this harness); the paper "
        "prints no std for this table, and no number for MDM (only that it is clearly above DDPM).",
    ]
