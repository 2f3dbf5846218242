"""The working scale of a data set: how far a preset may shrink its images, set by its objects.

A preset's `max_side` caps the long side of every image, a budget chosen on GlaS, whose glands
stay tens of pixels across at 256 px. MoNuSeg's nuclei are about 22 px across at 1,000 px: that
cap would shrink them to 5 px and merge neighbours before any method sees them. So the cap may
shrink an image only as far as its data set's objects allow:

    factor = min(1, max(max_side / long side, floor)),   floor = min(1, MIN / median diameter)

where the median diameter is that of every labelled instance of the TRAINING split (the
equivalent diameter sqrt(4 area / pi) of each instance id; the test split is never read), and
MIN is `SCALE_RULE.min_diameter_px` (docs/working-scale.md says why 20 px). A data set without
instance labels has no floor (the cap alone), and no image is ever enlarged beyond its native
size. Where the floor is below the cap's factor, as on GlaS, the working size is exactly the
cap's, so runs there are unchanged.

`working_size` is the one function every resize to the working size goes through;
`scale_floor(dataset, root)` is the floor it takes, measured once per data set and cached on disk
under a key of the training data (`_data_key`).
"""
from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any, Iterable, Sequence

import numpy as np

from bench.data.fingerprint import fingerprint
from bench.data.registry import dataset_info, get_dataset
from bench.data.synthetic import cache_base
from bench.data.types import Sample
from bench.store import atomic_write_json

log = logging.getLogger("bench")


@dataclass(frozen=True)
class ScaleRule:
    """The one number of the rule, and where its measurements are cached."""

    min_diameter_px: float = 20.0   # the median training instance keeps at least this diameter
    cache_folder: str = "object-sizes"  # under $BENCH_CACHE
    cache_version: int = 1          # bump when what `measure` computes changes


SCALE_RULE = ScaleRule()


@dataclass(frozen=True)
class ObjectSizes:
    """What a data set's training labels say about its objects (None: it has no instance labels)."""

    median_diameter_px: float | None
    instances: int
    images: int

    def floor(self, rule: ScaleRule = SCALE_RULE) -> float:
        """The smallest factor the data set's images may be shrunk by (0: no floor)."""
        if not self.median_diameter_px:
            return 0.0
        return min(1.0, rule.min_diameter_px / self.median_diameter_px)


NO_INSTANCES = ObjectSizes(None, 0, 0)


def working_factor(hw: tuple[int, int], max_side: int | None, floor: float = 0.0) -> float:
    """The factor an image of size `hw` is resized by: the cap's, raised to `floor`, at most 1."""
    long_side = max(hw)
    if max_side is None or long_side <= max_side:
        return 1.0
    return min(1.0, max(max_side / long_side, floor))


def working_size(hw: tuple[int, int], max_side: int | None, floor: float = 0.0) -> tuple[int, int]:
    """The working size of an image: its long side capped at `max_side`, but never shrunk by more
    than `floor` allows (`scale_floor` of its data set; 0 = the cap alone) nor enlarged; aspect kept."""
    h, w = hw
    factor = working_factor(hw, max_side, floor)
    if factor >= 1.0:
        return h, w
    return max(1, round(h * factor)), max(1, round(w * factor))


def equivalent_diameters(instances: np.ndarray) -> np.ndarray:
    """sqrt(4 area / pi) of every instance id present in an instance map (0 = background)."""
    areas = np.bincount(np.asarray(instances, dtype=np.int64).ravel())[1:]
    return np.sqrt(4.0 * areas[areas > 0] / math.pi)


def measure(samples: Iterable[Sample]) -> ObjectSizes:
    """The median equivalent diameter over every instance of every sample that has instance labels."""
    diameters: list[float] = []
    images = 0
    for sample in samples:
        if sample.instances is None:
            continue
        images += 1
        diameters.extend(equivalent_diameters(sample.instances).tolist())
    if not diameters:
        return NO_INSTANCES
    return ObjectSizes(float(median(diameters)), len(diameters), images)


def _data_key(dataset: str, root: str | Path | None) -> str | None:
    """What the cached measurement of `dataset` at `root` is valid for: the content fingerprint of
    its files (bench.data.fingerprint; None: no root, nothing cached on disk)."""
    return None if root is None else fingerprint(dataset, root)


def _cache_path(dataset: str, key: str, rule: ScaleRule) -> Path:
    return cache_base() / rule.cache_folder / f"{dataset}-{key}-v{rule.cache_version}.json"


def object_sizes(dataset: str, root: str | Path | None, rule: ScaleRule = SCALE_RULE) -> ObjectSizes:
    """`measure` of the data set's training split: once per process (like its loaded splits),
    and cached on disk under `_data_key`, so another process finds it without measuring again."""
    if not dataset_info(dataset).has_instances:
        return NO_INSTANCES
    return _memo(dataset, None if root is None else str(Path(root).expanduser().resolve()), rule)


@functools.lru_cache(maxsize=64)
def _memo(dataset: str, root: str | None, rule: ScaleRule) -> ObjectSizes:
    key = _data_key(dataset, root)
    path = None if key is None else _cache_path(dataset, key, rule)
    if path is not None and path.is_file():
        try:
            return ObjectSizes(**json.loads(path.read_text())["sizes"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: unreadable object-size cache, measuring again", path)
    sizes = measure(get_dataset(dataset, root, "train"))  # the training split only, never the test
    if path is not None:
        try:
            atomic_write_json(path, {"dataset": dataset, "root": root, "key": key, "sizes": asdict(sizes)})
        except OSError as exc:  # a read-only cache folder costs a re-measurement, nothing else
            log.warning("%s: cannot cache object sizes (%s)", path, exc)
    return sizes


def clear_memo() -> None:
    """Forget this process's measurements (tests, or after the files on disk changed)."""
    _memo.cache_clear()


def scale_floor(dataset: str | None, root: str | Path | None, rule: ScaleRule = SCALE_RULE) -> float:
    """The floor `working_size` takes for images of `dataset` (0 when no data set is known)."""
    return 0.0 if dataset is None else object_sizes(dataset, root, rule).floor(rule)


def spec_floor(spec: Any) -> float:
    """`scale_floor` of a run's spec (anything with `dataset` and `root`); 0 for None (a plugin
    called directly, outside a run, works at the cap alone)."""
    return 0.0 if spec is None else scale_floor(spec.dataset, spec.root)


def scale_record(dataset: str, root: str | Path | None, max_side: int | None,
                 sizes: Sequence[tuple[int, int]], input_size: int | None = None,
                 rule: ScaleRule = SCALE_RULE) -> dict[str, Any]:
    """A run's working scale, for its record: the rule's inputs and, over the images `sizes` (the
    test images), the range of factors and working long sides; `raised` where the floor set them."""
    if input_size:
        return {"input_size": input_size, "side": [input_size, input_size], "raised": False}
    objects = object_sizes(dataset, root, rule) if max_side is not None else NO_INSTANCES
    floor = objects.floor(rule)
    factors = [working_factor(hw, max_side, floor) for hw in sizes] or [1.0]
    sides = [max(working_size(hw, max_side, floor)) for hw in sizes] or [0]
    raised = any(working_factor(hw, max_side, floor) > working_factor(hw, max_side) for hw in sizes)
    return {"max_side": max_side, "min_diameter_px": rule.min_diameter_px,
            "median_diameter_px": objects.median_diameter_px, "floor": floor,
            "factor": [min(factors), max(factors)], "side": [min(sides), max(sides)], "raised": raised}
