"""Validation splits carved from a data set's training images, for choosing settings honestly.

`glas-val` is GlaS with a fixed fifth of its training images held out as the test split and the
rest as the training split; its pre-training pool is therefore the training images alone. A
preset is chosen on such a split and the real test set is scored once with what was chosen, so
no setting is ever tuned on test images (docs/small-preset.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from bench.data.types import Sample

SUFFIX = "-val"
HOLDOUT_FRACTION = 0.2   # of the training images
HOLDOUT_SEED = 0         # fixed: every method and seed is validated on the same images

Loader = Callable[[Path, str], list[Sample]]


def holdout_indices(names: list[str]) -> set[int]:
    """Indices of the held-out images: a fixed random fifth, by name order (any machine, any run)."""
    order = np.argsort(np.array(names), kind="stable")
    count = max(1, round(HOLDOUT_FRACTION * len(names)))
    chosen = np.random.default_rng(HOLDOUT_SEED).permutation(len(names))[:count]
    return {int(order[i]) for i in chosen}


def validation_loader(source: Loader) -> Loader:
    """A loader whose "train" is the source's training images less the held-out ones, and whose
    "test" is the held-out ones; the source's test split is never read."""

    def load(root: Path, split: str) -> list[Sample]:
        train = source(root, "train")
        held = holdout_indices([s.name for s in train])
        return [s for i, s in enumerate(train) if (i in held) == (split == "test")]

    return load
