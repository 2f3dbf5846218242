"""Saving labelled synthetic images for inspection: PNG pairs, their scores, one overview figure.

`save_inspection` writes, under one folder, the first `limit` images as `sample-NNNN.png` with
their class maps as `sample-NNNN-label.png` (uint8 class ids), `synthetic.json` with every
image's uncertainty and whether it was kept, and `synthetic.png`: each image above its
colour-coded labels, dropped (most uncertain) images framed in red.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from bench.store import atomic_write_bytes, atomic_write_json

FRAME = 3                     # pixels of the red frame around a dropped image
DROPPED_RGB = (220, 30, 30)
LABEL_ALPHA = 0.6             # the label colours over the image


def palette(num_classes: int) -> np.ndarray:
    """(C, 3) uint8 colours: class 0 black, the others well apart in hue (deterministic)."""
    hues = (np.arange(num_classes) * 0.618034) % 1.0
    rgb = np.stack([_hsv(h, 0.85, 0.95) for h in hues]).astype(np.float64)
    rgb[0] = 0
    return (rgb * 255).round().astype(np.uint8)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def overview(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], dropped: Sequence[bool],
             num_classes: int) -> np.ndarray:
    """One RGB figure: a column per image, the image on top, its labels over it below."""
    colours = palette(num_classes)
    columns = []
    for image, label, drop in zip(images, labels, dropped):
        over = (image * (1 - LABEL_ALPHA) + colours[np.clip(label, 0, num_classes - 1)] * LABEL_ALPHA)
        column = np.concatenate([image, over.round().astype(np.uint8)], axis=0)
        framed = np.full((column.shape[0] + 2 * FRAME, column.shape[1] + 2 * FRAME, 3), 255, np.uint8)
        if drop:
            framed[:] = DROPPED_RGB
        framed[FRAME:-FRAME, FRAME:-FRAME] = column
        columns.append(framed)
    return np.concatenate(columns, axis=1)


def save_inspection(folder: Path, images: np.ndarray, labels: Sequence[np.ndarray], scores: Sequence[float],
                    kept: Sequence[int], num_classes: int, limit: int) -> None:
    keep = set(kept)
    atomic_write_json(folder / "synthetic.json", {
        "uncertainty": [float(s) for s in scores], "kept": sorted(keep), "num_classes": num_classes,
        "note": "uncertainty: mean Jensen-Shannon divergence of the probe ensemble over the image's "
                "most divergent pixels; images not in `kept` were dropped before DeepLab training",
    })
    shown = range(min(limit, len(images)))
    for i in shown:
        atomic_write_bytes(folder / f"sample-{i:04d}.png", _png(images[i]))
        atomic_write_bytes(folder / f"sample-{i:04d}-label.png", _png(labels[i].astype(np.uint8)))
    if len(shown):
        figure = overview([images[i] for i in shown], [labels[i] for i in shown],
                          [i not in keep for i in shown], num_classes)
        atomic_write_bytes(folder / "synthetic.png", _png(figure))
