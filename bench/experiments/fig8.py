"""Figure 8: robustness of models trained on clean data to corrupted test images.

Every method is trained once per seed on clean data (fraction 1.0); its run then also predicts
on corrupted copies of the test images with the same trained model (`RunSpec.robustness`), so
the clean and corrupted scores of a seed come from one record. Outputs, in results/fig8/:
severity.png/.pdf (mean foreground IoU over the corruptions against severity, 0 = clean, one
panel per data set), corruptions_DATASET.png/.pdf (one small panel per corruption),
table.md/.tex/.csv (rows methods, columns severities, mean over corruptions) and
robustness.csv (every number the figures show, one row per seed).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.corruptions import PAPER_CORRUPTIONS, SEVERITIES, Robustness
from bench.experiments.base import Experiment, ExperimentContext, Variant, experiment, medical_datasets
from bench.experiments.tables import DATASET_LABELS, METRIC_LABELS, ResultTable, method_label, write_tables
from bench.records import is_number
from bench.runner import RunSpec
from bench.store import atomic_write_bytes
from bench.tables import TABLE1_METHODS, seed_mean_std

METHODS: tuple[str, ...] = TABLE1_METHODS  # plus bench.toml's other methods, after these


@dataclass(frozen=True)
class Fig8Config:
    """What the figure sweeps. The corruption set is the paper's (REFERENCE §9, Figure 8)."""

    corruptions: tuple[str, ...] = PAPER_CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    max_images: int | None = None            # test images corrupted per run (None: all)
    corruption_seed: int = 0                 # base of the per-image corruption seeds
    fraction: float = 1.0
    metric: str = "iou"                      # foreground IoU of the binary medical data sets
    datasets: tuple[str, ...] = ("glas", "monuseg")
    panel_columns: int = 5                   # small multiples per row
    panel_inches: float = 2.6


# Per preset: tiny corrupts a handful of test images per run so a CPU sweep stays short.
CONFIGS: dict[str, Fig8Config] = {"tiny": Fig8Config(max_images=4), "small": Fig8Config(max_images=20),
                                  "paper": Fig8Config()}


def config(ctx: ExperimentContext) -> Fig8Config:
    return CONFIGS[ctx.sweep.preset]


def methods(ctx: ExperimentContext) -> list[str]:
    """The nine methods of Table 1, then any other method bench.toml lists."""
    return list(METHODS) + [m for m in ctx.sweep.methods if m not in METHODS]


def datasets(ctx: ExperimentContext) -> list[str]:
    """GlaS and MoNuSeg where configured; the synthetic stand-in (with a note) when neither is."""
    return medical_datasets(ctx, config(ctx).datasets, "fig8")


def robustness(cfg: Fig8Config) -> Robustness:
    return Robustness(corruptions=tuple(cfg.corruptions), severities=tuple(cfg.severities),
                      max_images=cfg.max_images, seed=cfg.corruption_seed)


def specs(ctx: ExperimentContext, dataset: str, method: str) -> list[RunSpec]:
    cfg = config(ctx)
    return ctx.specs(Variant(method, method), dataset, cfg.fraction, robustness=robustness(cfg))


Curves = dict[str, dict[int, dict[int, float]]]  # corruption -> severity (0 = clean) -> seed -> %


def curves(ctx: ExperimentContext, dataset: str, method: str) -> Curves:
    """Percent scores per corruption, severity and seed from the method's finished records."""
    cfg = config(ctx)
    out: Curves = {c: {s: {} for s in (0, *cfg.severities)} for c in cfg.corruptions}
    for record in ctx.records(specs(ctx, dataset, method)):
        rob = record.get("robustness")
        if not rob:
            continue
        seed = int(record["seed"])
        for c in cfg.corruptions:
            _put(out[c][0], seed, rob["clean"].get(cfg.metric))
            for s in cfg.severities:
                _put(out[c][s], seed, rob["corruptions"].get(c, {}).get(str(s), {}).get(cfg.metric))
    return out


def _put(by_seed: dict[int, float], seed: int, score: Any) -> None:
    """A record's score in percent; one it lacks (another corruption set) or that was undefined is left out."""
    if is_number(score):
        by_seed[seed] = 100.0 * float(score)


def mean_over_corruptions(curve: Curves, severity: int) -> dict[int, float]:
    """Per seed, the mean over corruptions at `severity` (seeds missing any corruption left out)."""
    per = [curve[c][severity] for c in curve]
    seeds = set.intersection(*(set(p) for p in per)) if per else set()
    return {s: float(np.mean([p[s] for p in per])) for s in sorted(seeds)}


def column(dataset: str, severity: int, several: bool) -> str:
    label = "clean" if severity == 0 else f"severity {severity}"
    return f"{DATASET_LABELS.get(dataset, dataset)} {label}" if several else label


@experiment
class Fig8(Experiment):
    name = "fig8"
    title = "Figure 8: mean IoU under common corruptions at severities 1-5 (models trained on clean data)"

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        return [s for d in datasets(ctx) for m in methods(ctx) for s in specs(ctx, d, m)]

    def write(self, ctx: ExperimentContext) -> list[Path]:
        cfg = config(ctx)
        data = {d: {m: curves(ctx, d, m) for m in methods(ctx)} for d in datasets(ctx)}
        several = len(data) > 1
        severities = (0, *cfg.severities)
        columns = [column(d, s, several) for d in data for s in severities]
        values = {(method_label(m), column(d, s, several)): mean_over_corruptions(data[d][m], s)
                  for d in data for m in data[d] for s in severities}
        metric = METRIC_LABELS.get(cfg.metric, cfg.metric)
        note = (f"{metric} (%) averaged over {len(cfg.corruptions)} corruptions "
                f"({', '.join(cfg.corruptions)}); models trained on clean data, label fraction {cfg.fraction:g}"
                + (f"; {cfg.max_images} test images per run corrupted" if cfg.max_images else ""))
        table = ResultTable(rows=[method_label(m) for m in methods(ctx)], columns=columns, values=values,
                            title=self.title, notes=[note])
        files = list(write_tables(table, ctx, stem="table"))
        files += severity_figure(ctx, data, severities)
        for d in data:
            files += corruption_panels(ctx, d, data[d], severities)
        files.append(write_long_csv(ctx, data))
        return files


def severity_figure(ctx: ExperimentContext, data: dict[str, dict[str, Curves]],
                    severities: tuple[int, ...]) -> list[Path]:
    """Mean IoU over corruptions against severity, one line per method (error bars: std over seeds)."""
    from matplotlib.figure import Figure  # imported late: discovery imports every experiment

    from bench.experiments.figures import save_figure

    cfg = config(ctx)
    fig = Figure(figsize=(cfg.panel_inches * 1.8 * len(data), cfg.panel_inches * 1.6), layout="constrained")
    axes = fig.subplots(1, len(data), squeeze=False)[0]
    for ax, (dataset, by_method) in zip(axes, data.items()):
        for method, curve in by_method.items():
            stats = [seed_mean_std(mean_over_corruptions(curve, s)) for s in severities]
            if all(math.isnan(m) for m, _ in stats):
                continue
            ax.errorbar(severities, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                        markersize=3, capsize=2, label=method_label(method))
        ax.set(title=DATASET_LABELS.get(dataset, dataset), xlabel="severity (0 = clean)",
               ylabel=f"mean {METRIC_LABELS.get(cfg.metric, cfg.metric)} (%)", xticks=list(severities))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    return list(save_figure(fig, ctx, "severity"))


def corruption_panels(ctx: ExperimentContext, dataset: str, by_method: dict[str, Curves],
                      severities: tuple[int, ...]) -> list[Path]:
    """Small multiples: one panel per corruption, IoU (mean over seeds) against severity."""
    from matplotlib.figure import Figure  # imported late: discovery imports every experiment

    from bench.experiments.figures import save_figure

    cfg = config(ctx)
    ncols = min(cfg.panel_columns, len(cfg.corruptions))
    nrows = math.ceil(len(cfg.corruptions) / ncols)
    fig = Figure(figsize=(cfg.panel_inches * ncols, cfg.panel_inches * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, corruption in zip(axes, cfg.corruptions):
        for method, curve in by_method.items():
            means = [seed_mean_std(curve[corruption][s])[0] for s in severities]
            if not all(math.isnan(m) for m in means):
                ax.plot(severities, means, marker="o", markersize=2, label=method_label(method))
        ax.set_title(corruption.replace("_", " "), fontsize="small")
        ax.set_xticks(list(severities))
        ax.grid(alpha=0.3)
    for ax in axes[len(cfg.corruptions):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel(f"{METRIC_LABELS.get(cfg.metric, cfg.metric)} (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize="small")
    metric = METRIC_LABELS.get(cfg.metric, cfg.metric)
    fig.suptitle(f"{DATASET_LABELS.get(dataset, dataset)}: {metric} (%) against severity (0 = clean)")
    return list(save_figure(fig, ctx, f"corruptions_{dataset}"))


def write_long_csv(ctx: ExperimentContext, data: dict[str, dict[str, Curves]]) -> Path:
    """Every plotted number, one row per (data set, method, corruption, severity, seed)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "method", "corruption", "severity", "seed", config(ctx).metric])
    for dataset, by_method in data.items():
        for method, curve in by_method.items():
            for i, (corruption, by_sev) in enumerate(curve.items()):
                for severity, by_seed in by_sev.items():
                    if severity == 0 and i > 0:
                        continue  # the clean score is the same for every corruption
                    name = "none" if severity == 0 else corruption
                    for seed, value in sorted(by_seed.items()):
                        w.writerow([dataset, method, name, severity, seed, f"{value:.4f}"])
    path = ctx.path("robustness.csv")
    atomic_write_bytes(path, buf.getvalue().encode())
    return path
