"""Small thumbnails of a run's predictions, kept in its record.

The predicted class maps (`output/predictions/RUN_ID/*.png`) are not kept in git; the records
are what a results folder commits. So every record keeps the class maps of the few test images
the prediction panels show (`panel_indices`: the sweep's and the qualitative figure's picks),
each cut to `max_side` pixels on its long side (nearest neighbour, so classes stay classes) and
PNG-compressed, base64 in the record: a few kB beside a record of about 17 kB. They live in the
record rather than in a file beside it because the record is the run's one commit point (written
atomically as its last act): a thumbnail can never be missing, stale or left behind when its
record is copied, migrated or committed, and `records/` stays one file per run.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ThumbnailConfig:
    # How many test images a prediction panel shows, evenly spread over the test split: the
    # sweep's 3 and the qualitative figure's (3 at tiny, 4 at small and paper). Thumbnails are
    # kept for the union of those picks.
    panel_images: tuple[int, ...] = (3, 4)
    max_side: int = 128


THUMBNAILS = ThumbnailConfig()


def spread_indices(n: int, count: int) -> list[int]:
    """`count` indices evenly spread over 0..n-1 (deterministic, first and last included)."""
    if n <= 0:
        return []
    count = min(count, n)
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, count)})


def panel_indices(n: int, cfg: ThumbnailConfig = THUMBNAILS) -> list[int]:
    """The test images any prediction panel may show, of a test split of n images."""
    return sorted({i for count in cfg.panel_images for i in spread_indices(n, count)})


def thumbnails(names: Sequence[str], predictions: Sequence[np.ndarray],
               cfg: ThumbnailConfig = THUMBNAILS) -> dict[str, Any]:
    """The record's `thumbnails`: {"max_side": S, "images": {image name: base64 PNG}}."""
    return {"max_side": cfg.max_side,
            "images": {names[i]: encode(predictions[i], cfg.max_side) for i in panel_indices(len(names), cfg)}}


def encode(pred: np.ndarray, max_side: int) -> str:
    """A class map cut to `max_side` (nearest neighbour), as base64 PNG: 1 bit a pixel for a
    binary map (at most 128 x 128 / 8 bytes before compression), else 8-bit grey (the class ids)."""
    pred = np.asarray(pred).astype(np.uint8)
    image = Image.fromarray(pred, mode="L")
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.NEAREST)
    if pred.size and int(pred.max()) <= 1:
        image = image.point(lambda v: 255 * v).convert("1")  # decodes to 0 / 1 again (bool)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(record: dict[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The record's thumbnail of test image `name` scaled back to `shape` (H x W, nearest
    neighbour) as int64 class ids; None where the record keeps none (older records)."""
    data = (record.get("thumbnails") or {}).get("images", {}).get(name)
    if not isinstance(data, str):
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
    except (OSError, ValueError):
        return None
    resized = image.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(np.int64)
