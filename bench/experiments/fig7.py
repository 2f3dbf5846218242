"""Figure 7: segmentation accuracy against pre-training length.

Two comparisons, each a curve of the probe's test Dice/IoU (mean ± std over the sweep's seeds)
against pre-training steps:

- DDPM against MDM on their guided-diffusion UNet: each length is its own pre-training run
  (`train_steps`), so with the paper preset's EMA a short run is a short run, not a snapshot.
- MaskDM against DDPM on the same U-ViT (the maskdm plugin either way, so the only difference is
  the recipe): MaskDM spends up to `maskdm_stage1` steps on masked pre-training and the rest on
  plain DDPM fine-tuning, the DDPM arm spends every step on plain DDPM training. This is the
  claim of the MaskDM paper (REFERENCE §7) that benchmarks/maskdm_steps.py measured for one seed.

Length 0 is the untrained backbone: the floor any pre-training has to beat. Outputs in
results/fig7/: fig7.png/.pdf and table.md/.tex/.csv (rows variant x length, columns metric).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import registry
from bench.experiments.base import Experiment, ExperimentContext, Variant, experiment, medical_datasets
from bench.experiments.figures import palette, save_figure
from bench.experiments.tables import ResultTable, collect, column_label, method_label, ordered_runs, write_tables
from bench.runner import RunSpec
from bench.tables import published, seed_mean_std


@dataclass(frozen=True)
class Fig7Config:
    """The lengths swept, per preset. Our choice: the paper gives no lengths for Figure 7.

    `lengths` are the total steps of ddpm and mdm (`steps_field`); `maskdm_lengths` the total
    steps of both U-ViT arms, of which MaskDM spends at most `maskdm_stage1` masked.
    """

    lengths: tuple[int, ...]
    maskdm_lengths: tuple[int, ...]
    maskdm_stage1: int
    fractions: tuple[float, ...] = (1.0, 0.1)
    metrics: tuple[str, ...] = ("dice", "iou")
    methods: tuple[str, ...] = ("ddpm", "mdm")
    steps_field: str = "train_steps"
    panel_inches: tuple[float, float] = (4.2, 3.0)
    band_alpha: float = 0.2


# tiny: around the tiny presets' 120 steps (maskdm tiny: 60 masked + 60 fine-tuning);
# paper: around the 10,000 iterations of the published GlaS checkpoints (REFERENCE §3-4).
PRESETS: dict[str, Fig7Config] = {
    "tiny": Fig7Config(lengths=(0, 30, 60, 120), maskdm_lengths=(0, 30, 60, 90, 120), maskdm_stage1=60),
    "small": Fig7Config(lengths=(0, 200, 400, 800, 1600), maskdm_lengths=(0, 200, 400, 600, 800),
                        maskdm_stage1=400),
    "paper": Fig7Config(lengths=(0, 2500, 5000, 10000, 20000), maskdm_lengths=(0, 5000, 10000, 15000, 20000),
                        maskdm_stage1=10000),
}


@dataclass(frozen=True)
class Arm:
    """One curve: a method and how a total length becomes its config."""

    key: str
    label: str
    method: str
    panel: int           # 0: the UNet methods, 1: MaskDM vs DDPM on the U-ViT

    def params(self, length: int, cfg: Fig7Config) -> dict[str, Any]:
        if self.key == "maskdm":
            first = min(length, cfg.maskdm_stage1)
            return {"stage1_steps": first, "stage2_steps": length - first}
        if self.key == "uvit-ddpm":
            return {"stage1_steps": 0, "stage2_steps": length}
        return {cfg.steps_field: length}

    def row(self, length: int, cfg: Fig7Config) -> str:
        if self.key == "maskdm":
            p = self.params(length, cfg)
            return f"{self.label} {length} ({p['stage1_steps']}+{p['stage2_steps']})"
        return f"{self.label} {length}"


PANELS = ("diffusion UNet: DDPM vs MDM", "U-ViT: MaskDM vs DDPM (equal total steps)")


def config(ctx: ExperimentContext) -> Fig7Config:
    return PRESETS[ctx.sweep.preset]


def arms(cfg: Fig7Config) -> list[Arm]:
    out = [Arm(m, method_label(m), m, 0) for m in cfg.methods]
    return out + [Arm("maskdm", "MaskDM", "maskdm", 1), Arm("uvit-ddpm", "U-ViT DDPM", "maskdm", 1)]


def points(cfg: Fig7Config) -> list[tuple[Arm, int]]:
    return [(a, n) for a in arms(cfg) for n in (cfg.lengths if a.panel == 0 else cfg.maskdm_lengths)]


def columns(dataset: str, cfg: Fig7Config) -> dict[str, tuple[float, str]]:
    """column label -> (fraction, metric)."""
    return {column_label(dataset, f, m): (f, m) for f in cfg.fractions for m in cfg.metrics}


def cells(ctx: ExperimentContext, dataset: str) -> dict[tuple[str, str], list[RunSpec]]:
    """{(row, column): specs}, arm by arm and length by length, so runs sharing a backbone follow each other."""
    cfg = config(ctx)
    out: dict[tuple[str, str], list[RunSpec]] = {}
    for arm, length in points(cfg):
        variant = Variant(arm.row(length, cfg), arm.method, arm.params(length, cfg))
        by_fraction = {f: ctx.specs(variant, dataset, f) for f in cfg.fractions}
        for col, (fraction, _) in columns(dataset, cfg).items():
            out[(variant.label, col)] = by_fraction[fraction]
    return out


def published_cells(ctx: ExperimentContext, dataset: str, cfg: Fig7Config) -> dict[tuple[str, str], tuple[float, float]]:
    """Table 1's numbers beside the rows that are the published checkpoints' setting (paper preset, GlaS)."""
    if ctx.sweep.preset != "paper" or dataset != "glas":
        return {}
    out = {}
    for arm, length in points(cfg):
        if arm.panel == 0 and length == getattr(registry.get(arm.method).presets["paper"], cfg.steps_field):
            for col, (fraction, metric) in columns(dataset, cfg).items():
                score = published(dataset, fraction, arm.method, metric)
                if score is not None:
                    out[(arm.row(length, cfg), col)] = score
    return out


@experiment
class Fig7(Experiment):
    name = "fig7"
    title = "Figure 7: segmentation accuracy against pre-training length"

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        return ordered_runs(cells(ctx, medical_datasets(ctx, ("glas",), "fig7")[0]))

    def write(self, ctx: ExperimentContext) -> list[Path]:
        cfg = config(ctx)
        dataset = medical_datasets(ctx, ("glas",), "fig7")[0]
        cols = columns(dataset, cfg)
        values = collect(ctx, cells(ctx, dataset), {c: m for c, (_, m) in cols.items()})
        rows = list(dict.fromkeys(a.row(n, cfg) for a, n in points(cfg)))
        note = (f"{dataset}, preset {ctx.sweep.preset}: rows are pre-training steps; MaskDM a+b = a masked "
                f"steps then b DDPM fine-tuning steps; U-ViT DDPM = the same U-ViT without the masked stage")
        table = ResultTable(rows=rows, columns=list(cols), values=values,
                            published=published_cells(ctx, dataset, cfg), title=self.title, notes=[note])
        files = list(write_tables(table, ctx, stem="table"))
        return files + save_figure(_figure(cfg, dataset, values, ctx.notes), ctx, "fig7")


def _figure(cfg: Fig7Config, dataset: str, values: dict[tuple[str, str], dict[int, float]], notes: list[str]):
    """Rows of panels = metrics, columns = the two comparisons; a line per arm and label fraction."""
    from matplotlib.figure import Figure  # no pyplot: the user's backend stays untouched
    from matplotlib.ticker import MaxNLocator

    w, h = cfg.panel_inches
    fig = Figure(figsize=(w * len(PANELS), h * len(cfg.metrics) + 0.5))
    axes = fig.subplots(len(cfg.metrics), len(PANELS), squeeze=False)
    colours = palette("tab10")
    styles = ("-", "--", ":", "-.")
    for r, metric in enumerate(cfg.metrics):
        for c, title in enumerate(PANELS):
            ax = axes[r][c]
            for i, arm in enumerate(a for a in arms(cfg) if a.panel == c):
                lengths = cfg.lengths if c == 0 else cfg.maskdm_lengths
                for j, fraction in enumerate(cfg.fractions):
                    col = column_label(dataset, fraction, metric)
                    stats = np.array([seed_mean_std(values.get((arm.row(n, cfg), col))) for n in lengths])
                    if np.isnan(stats[:, 0]).all():
                        continue
                    colour = colours[i % len(colours)]
                    ax.plot(lengths, stats[:, 0], styles[j % len(styles)], marker="o", markersize=3,
                            color=colour, label=f"{arm.label} {100 * fraction:g}% labels")
                    ax.fill_between(lengths, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1],
                                    color=colour, alpha=cfg.band_alpha, linewidth=0)
            if c == 1 and 0 < cfg.maskdm_stage1 < max(cfg.maskdm_lengths, default=0):
                ax.axvline(cfg.maskdm_stage1, color="grey", linestyle=":", linewidth=1)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("pre-training steps", fontsize=8)
            ax.set_ylabel(f"{metric} (%)", fontsize=8)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.lines:
                ax.legend(fontsize=6)
    fig.suptitle("\n".join([f"Accuracy vs pre-training length, {dataset} (mean ± std over seeds)", *notes]),
                 fontsize=9)
    fig.tight_layout()
    return fig
