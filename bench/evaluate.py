"""Scores a run's predictions on the test split with the data set's metrics (REFERENCE §2).

Binary data sets: every per-image score averaged over the test images, and `iou_paper`, the paper's
IoU, from the mean `dice_paper` (bench.metrics). Multi-class data sets: mIoU pooled over the images.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.data.types import Dataset
from bench.metrics import binary_scores, iou_paper, miou


def evaluate(test: Dataset, predictions: Sequence[np.ndarray]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(data-set-level metrics, per-image metrics); values are fractions in [0, 1]."""
    if len(predictions) != len(test):
        raise ValueError(f"{len(predictions)} predictions for {len(test)} test images")
    per_image: dict[str, dict[str, float]] = {}
    if test.num_classes == 2:
        for sample, pred in zip(test, predictions):
            per_image[sample.name] = binary_scores(pred, sample.semantic, sample.instances)
        keys = next(iter(per_image.values())).keys()
        metrics = {k: float(np.mean([m[k] for m in per_image.values()])) for k in keys}
        metrics["iou_paper"] = iou_paper(metrics["dice_paper"])
        return metrics, per_image
    for sample, pred in zip(test, predictions):
        per_image[sample.name] = {"miou": miou([pred], [sample.semantic], test.num_classes, test.ignore_index)}
    pooled = miou(list(predictions), [s.semantic for s in test], test.num_classes, test.ignore_index)
    return {"miou": pooled}, per_image
