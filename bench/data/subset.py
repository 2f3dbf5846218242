"""Which training images are labelled in a label-fraction experiment."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Guards floor() against float error, e.g. 30 * 0.1 = 3.0000000000000004 or 0.1 * 70 = 6.999...
_FLOOR_EPS = 1e-9


def subset_size(n: int, fraction: float) -> int:
    """floor(n * fraction), at least one image (GlaS 85 at 10% -> 8, MoNuSeg 30 -> 3)."""
    return max(1, math.floor(n * fraction + _FLOOR_EPS))


def label_subset(n: int, fraction: float, seed: int, rule: str = "random",
                 names: Sequence[str] | None = None) -> list[int]:
    """Sorted indices of the labelled images: same arguments -> same subset, on any machine.

    rule "random": a draw from its own `numpy.random.default_rng(seed)` (no global random state
    is read or changed), a different subset per seed. rule "sorted": the first N of the images'
    `names` in plain string order, the same for every seed, as the official scripts take them
    (`sorted(os.listdir(...))[:N]`: GlaS at 10% labels train_1, train_10 .. train_16).
    """
    if n < 1:
        raise ValueError(f"label_subset: n must be >= 1 (got {n})")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_subset: fraction must be in (0, 1] (got {fraction})")
    size = min(n, subset_size(n, fraction))
    if rule == "sorted":
        if names is None or len(names) != n:
            raise ValueError("label_subset: rule 'sorted' needs the n images' names")
        return sorted(sorted(range(n), key=lambda i: names[i])[:size])
    if rule != "random":
        raise ValueError(f"label_subset: rule must be 'sorted' or 'random' (got {rule!r})")
    if size == n:
        return list(range(n))
    chosen = np.random.default_rng(seed).choice(n, size=size, replace=False)
    return sorted(int(i) for i in chosen)
