"""`sweep`: the pictures of any sweep, not only the paper's experiments.

For the sweep bench.toml describes, three figures a reader would rather look at than read:
- scores: every seed's score of every cell (dataset x fraction) per method, as a box with its
  points, beside the `trivial` reference line (a number at chance is visible at a glance);
- curves: each method's learning curves from its records' `history` (pre-training loss, probe
  epoch loss, baseline training loss and validation Dice), so a reader sees whether a stage
  converged;
- qualitative: a few test images, their ground truth and each method's prediction.
`bench report` writes it (without running anything) before it gathers the page.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import get_dataset
from bench.experiments.base import Experiment, ExperimentContext, experiment
from bench.experiments.figures import save_figure
from bench.experiments.qualitative import QualitativeConfig, error_map, method_predictions, panel_figure
from bench.experiments.tables import DATASET_LABELS, method_label
from bench.runner import RunSpec, expand
from bench.thumbnails import spread_indices

MAIN_METRICS = ("dice", "miou")  # the first one a record has is its cell's headline score
NOT_CURVES = ("step", "every", "active")  # history fields that are no learning curve
PANEL_INCHES = 3.2
QUALITATIVE = QualitativeConfig(images=3)


def main_metric(record: dict[str, Any]) -> str | None:
    return next((m for m in MAIN_METRICS if m in record.get("metrics", {})), None)


def _cells(records: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return sorted({(r["dataset"], float(r["fraction"])) for r in records}, key=lambda c: (c[0], -c[1]))


def _trivial(ctx: ExperimentContext, dataset: str, fraction: float, metric: str) -> float | None:
    from bench.trivial import scores

    entry = ctx.entry(dataset)
    try:
        return 100 * float(scores(dataset, entry.root if entry else None, fraction)["metrics"][metric])
    except Exception as exc:  # a reference that cannot be computed leaves its line out, said once
        ctx.note(f"{dataset} {fraction:g}: no trivial reference line ({exc})")
        return None


def scores_figure(ctx: ExperimentContext, records: list[dict[str, Any]], methods: list[str]) -> Any:
    from matplotlib.figure import Figure

    cells = _cells(records)
    cols = min(2, len(cells))
    rows = math.ceil(len(cells) / cols)
    fig = Figure(figsize=(PANEL_INCHES * 1.6 * cols, PANEL_INCHES * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (dataset, fraction) in zip(axes.flat, cells):
        mine = [r for r in records if r["dataset"] == dataset and float(r["fraction"]) == fraction]
        metric = main_metric(mine[0]) or "dice"
        shown = [m for m in methods if any(r["method"] == m for r in mine)]
        values = [[100 * r["metrics"][metric] for r in mine if r["method"] == m] for m in shown]
        ax.boxplot(values, showfliers=False, widths=0.5)
        rng = np.random.default_rng(0)
        for i, vals in enumerate(values, start=1):
            ax.plot(i + rng.uniform(-0.12, 0.12, len(vals)), vals, ".", color="tab:blue", alpha=0.7)
        ax.set_xticks(range(1, len(shown) + 1), [method_label(m) for m in shown], rotation=45,
                      ha="right", fontsize=7)
        trivial = _trivial(ctx, dataset, fraction, metric)
        if trivial is not None:
            ax.axhline(trivial, color="grey", linestyle="--", linewidth=1, label=f"trivial {trivial:.1f}")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)}, {100 * fraction:g}% labels", fontsize=9)
        ax.set_ylabel(f"{metric} (%) per seed", fontsize=8)
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    return fig


def curves_figure(records: list[dict[str, Any]], methods: list[str]) -> Any | None:
    """One row per method (its first record with a history), one panel per stage."""
    from matplotlib.figure import Figure

    rows = []
    for m in methods:
        mine = sorted((r for r in records if r["method"] == m and r.get("history")),
                      key=lambda r: (-float(r["fraction"]), r["seed"]))
        if mine:
            rows.append((m, mine[0]))
    if not rows:
        return None
    cols = max(len(r["history"]) for _, r in rows)
    fig = Figure(figsize=(PANEL_INCHES * cols, 2.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for i, (method, record) in enumerate(rows):
        stages = list(record["history"].items())
        for j in range(cols):
            ax = axes[i][j]
            if j >= len(stages):
                ax.set_visible(False)
                continue
            stage, hist = stages[j]
            steps = hist.get("step", [])
            for key, vals in hist.items():
                if key in NOT_CURVES or not isinstance(vals, list) or len(vals) != len(steps):
                    continue
                ys = [np.nan if v is None else v for v in vals]
                ax.plot(steps, ys, label=key, linewidth=1)
            ax.set_title(f"{method_label(method)}: {stage}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
    fig.suptitle("learning curves (seed %d of the largest label fraction)" % rows[0][1]["seed"], fontsize=9)
    return fig


@experiment
class Sweep(Experiment):
    name = "sweep"
    title = "This sweep: per-seed scores beside the trivial row, learning curves, predictions"

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        if ctx.sweep_runs is None:
            ctx.sweep_runs = expand(ctx.sweep)
        return ctx.sweep_runs

    def write(self, ctx: ExperimentContext) -> list[Path]:
        specs = self.runs(ctx)
        records = ctx.records(specs)
        if not records:
            ctx.note("no records yet: nothing to draw")
            return []
        methods = list(dict.fromkeys(s.method for s in specs))
        files = save_figure(scores_figure(ctx, records, methods), ctx, "scores")
        curves = curves_figure(records, methods)
        if curves is not None:
            files += save_figure(curves, ctx, "curves")
        return files + self.qualitative(ctx, specs, records, methods)

    def qualitative(self, ctx: ExperimentContext, specs: list[RunSpec], records: list[dict[str, Any]],
                    methods: list[str]) -> list[Path]:
        """The first data set's test images, each method's prediction (largest fraction, first seed)."""
        done = {r["run_id"] for r in records}
        dataset = specs[0].dataset
        chosen: dict[str, RunSpec] = {}
        for spec in sorted((s for s in specs if s.dataset == dataset and s.run_id in done),
                           key=lambda s: (-s.fraction, s.seed)):
            chosen.setdefault(spec.method, spec)
        test = get_dataset(dataset, specs[0].root, "test")
        samples = [test[i] for i in spread_indices(len(test), QUALITATIVE.images)]
        absent = [m for m in methods if m not in chosen]
        if absent:
            ctx.note(f"{dataset}: no finished run of {', '.join(map(method_label, absent))}; not shown")
        predictions = method_predictions(ctx, chosen, samples, dataset)
        panels = []
        for i, sample in enumerate(samples):
            row: list[tuple[str, np.ndarray | None]] = [
                ("image", sample.image),
                ("ground truth", error_map(sample.semantic, sample.semantic, test.ignore_index, QUALITATIVE))]
            for method, maps in predictions.items():
                pred = maps[i]
                row.append((method_label(method), None if pred is None else
                            error_map(pred, sample.semantic, test.ignore_index, QUALITATIVE)))
            panels.append(row)
        fig = panel_figure(panels, [s.name for s in samples], DATASET_LABELS.get(dataset, dataset), QUALITATIVE,
                           ctx.notes)
        return save_figure(fig, ctx, "qualitative")
