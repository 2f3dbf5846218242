"""Qualitative results (the paper's Figs 3-4): image, ground truth and every method's prediction.

Each prediction is drawn as an error map against the ground truth, so where a method fails is
visible at a glance: correct foreground, correct background, false positives and false negatives
in four colours (config below). The predictions are the PNGs the runner saved for each run
(output/predictions/RUN_ID/NAME.png; seed 0, all labels), so the figure shows exactly what the
tables scored. Outputs in results/qualitative/: DATASET.png/.pdf (rows = test images, chosen
evenly over the test split; columns = image, ground truth, methods) and the full-resolution
panels DATASET/IMAGE/METHOD.png.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data import get_dataset
from bench.data.types import Sample
from bench.errors import DataError
from bench.experiments.base import Experiment, ExperimentContext, Variant, experiment, medical_datasets
from bench.experiments.figures import save_figure
from bench.experiments.tables import DATASET_LABELS, method_label
from bench.records import read_record
from bench.runner import RunSpec
from bench.store import atomic_write_bytes
from bench.tables import TABLE1_METHODS
from bench.thumbnails import THUMBNAILS, spread_indices, thumbnail

RGB = tuple[int, int, int]
METHODS: tuple[str, ...] = TABLE1_METHODS  # plus bench.toml's other methods, after these


@dataclass(frozen=True)
class QualitativeConfig:
    """Which runs and images are shown, and the error-map colours (RGB, 0-255)."""

    datasets: tuple[str, ...] = ("glas", "monuseg")
    images: int = 3
    seed: int = 0
    fraction: float = 1.0
    true_positive: RGB = (255, 255, 255)
    true_negative: RGB = (0, 0, 0)
    false_positive: RGB = (230, 40, 40)      # predicted foreground where the truth is background
    false_negative: RGB = (30, 144, 255)     # truth foreground missed (or given another class)
    ignored: RGB = (128, 128, 128)           # ignore_index pixels of the ground truth
    panel_inches: float = 1.6


PRESETS: dict[str, QualitativeConfig] = {"tiny": QualitativeConfig(images=3),
                                         "small": QualitativeConfig(images=4),
                                         "paper": QualitativeConfig(images=4)}


def config(ctx: ExperimentContext) -> QualitativeConfig:
    return PRESETS[ctx.sweep.preset]


def methods(ctx: ExperimentContext) -> list[str]:
    """The nine methods of Table 1, then any other method bench.toml lists."""
    return list(METHODS) + [m for m in ctx.sweep.methods if m not in METHODS]


def error_map(pred: np.ndarray, truth: np.ndarray, ignore_index: int, cfg: QualitativeConfig) -> np.ndarray:
    """H x W x 3 uint8: TP, TN, FP, FN and ignored pixels of `pred` against `truth`, each its colour.

    Background is class 0. A foreground pixel given the wrong foreground class counts as missed
    (false negative); with two classes the four colours are the usual confusion cells.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in size")
    out = np.empty((*truth.shape, 3), np.uint8)
    fg_truth, fg_pred = truth != 0, pred != 0
    out[~fg_truth & ~fg_pred] = cfg.true_negative
    out[~fg_truth & fg_pred] = cfg.false_positive
    out[fg_truth & (pred == truth)] = cfg.true_positive
    out[fg_truth & (pred != truth)] = cfg.false_negative
    out[truth == ignore_index] = cfg.ignored
    return out


def read_prediction(spec: RunSpec, sample: Sample) -> np.ndarray | None:
    """The run's saved class map of `sample`; None if the run has none (not run, or failed)."""
    path = Path(spec.output) / "predictions" / spec.run_id / f"{sample.name}.png"
    if not path.is_file():
        return None
    pred = np.asarray(Image.open(path)).astype(np.int64)
    if pred.shape != sample.semantic.shape:
        raise DataError(path, f"size: {pred.shape[::-1]} but the test image is {sample.semantic.shape[::-1]} "
                              f"(predictions of another data set version?)")
    return pred


def method_predictions(ctx: ExperimentContext, specs: dict[str, RunSpec], samples: list[Sample],
                       dataset: str) -> dict[str, list[np.ndarray | None]]:
    """Each method's class map of each sample: the run's saved PNG, else the thumbnail its record
    keeps (scaled up; the predictions/ folder is not in git, the records are). A method with
    neither is left out, and one note line says so instead of a column of empty tiles."""
    out: dict[str, list[np.ndarray | None]] = {}
    from_thumbnails, absent = [], []
    for method, spec in specs.items():
        record = None
        maps: list[np.ndarray | None] = []
        for sample in samples:
            pred = read_prediction(spec, sample)
            if pred is None:
                record = record or read_record(spec.record_path) or {}
                pred = thumbnail(record, sample.name, sample.semantic.shape)
                if pred is not None and method not in from_thumbnails:
                    from_thumbnails.append(method)
            maps.append(pred)
        if all(m is None for m in maps):
            absent.append(method)
            continue
        ctx.mark_read(spec.run_id)
        out[method] = maps
    if from_thumbnails:
        ctx.note(f"{dataset}: {', '.join(map(method_label, from_thumbnails))} drawn from the thumbnails in "
                 f"their records ({THUMBNAILS.max_side} px; their predictions/ are not here)")
    if absent:
        ctx.note(f"{dataset}: no saved prediction or record thumbnail of {', '.join(map(method_label, absent))} "
                 "(not run yet, or recorded before records kept thumbnails); not shown")
    return out


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@experiment
class Qualitative(Experiment):
    name = "qualitative"
    title = "Figures 3-4: qualitative segmentations with false positives and negatives highlighted"

    def specs(self, ctx: ExperimentContext, dataset: str) -> dict[str, RunSpec]:
        cfg = config(ctx)
        return {m: ctx.specs(Variant(m, m), dataset, cfg.fraction, seeds=(cfg.seed,))[0] for m in methods(ctx)}

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        datasets = medical_datasets(ctx, config(ctx).datasets, "qualitative")
        return [s for d in datasets for s in self.specs(ctx, d).values()]

    def write(self, ctx: ExperimentContext) -> list[Path]:
        cfg = config(ctx)
        files: list[Path] = []
        for dataset in medical_datasets(ctx, cfg.datasets, "qualitative"):
            specs = self.specs(ctx, dataset)
            test = get_dataset(dataset, specs[next(iter(specs))].root, "test")
            samples = [test[i] for i in spread_indices(len(test), cfg.images)]
            predictions = method_predictions(ctx, specs, samples, dataset)
            panels: list[list[tuple[str, np.ndarray | None]]] = []
            for i, sample in enumerate(samples):
                truth = error_map(sample.semantic, sample.semantic, test.ignore_index, cfg)
                row: list[tuple[str, np.ndarray | None]] = [("image", sample.image), ("ground truth", truth)]
                for method, maps in predictions.items():
                    pred = maps[i]
                    if pred is None:
                        ctx.note(f"{dataset}: {method} has no saved prediction of {sample.name} "
                                 f"(run {specs[method].run_id} missing or failed); its panel is left grey")
                        row.append((method_label(method), None))
                        continue
                    panel = error_map(pred, sample.semantic, test.ignore_index, cfg)
                    path = ctx.path(f"{dataset}/{sample.name}/{method}.png")
                    atomic_write_bytes(path, _png(panel))
                    files.append(path)
                    row.append((method_label(method), panel))
                panels.append(row)
            fig = panel_figure(panels, [s.name for s in samples], DATASET_LABELS.get(dataset, dataset), cfg, ctx.notes)
            files = save_figure(fig, ctx, dataset) + files
        return files


def panel_figure(panels: list[list[tuple[str, np.ndarray | None]]], names: list[str], dataset: str,
            cfg: QualitativeConfig, notes: list[str]):
    from matplotlib.figure import Figure  # no pyplot: the user's backend stays untouched
    from matplotlib.patches import Patch

    cols = max(len(r) for r in panels)
    fig = Figure(figsize=(cfg.panel_inches * cols, cfg.panel_inches * len(panels) + 0.9))
    axes = fig.subplots(len(panels), cols, squeeze=False)
    for i, row in enumerate(panels):
        for j, (label, array) in enumerate(row):
            ax = axes[i][j]
            if array is None:
                ax.set_facecolor("lightgrey")
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes, fontsize=7)
            else:
                ax.imshow(array, interpolation="nearest")
            if i == 0:
                ax.set_title(label, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(names[i], fontsize=7)
    legend = [Patch(facecolor=(c[0] / 255, c[1] / 255, c[2] / 255), edgecolor="grey", label=name) for name, c in (
        ("true positive", cfg.true_positive), ("true negative", cfg.true_negative),
        ("false positive", cfg.false_positive), ("false negative", cfg.false_negative))]
    fig.legend(handles=legend, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle("\n".join([f"{dataset}: predictions (seed {cfg.seed}, {100 * cfg.fraction:g}% labels)", *notes]),
                 fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
