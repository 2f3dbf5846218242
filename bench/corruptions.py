"""Common corruptions of test images (Hendrycks & Dietterich) for the robustness figure (fig8).

The corruption code is the `imagecorruptions-imaug` package (import name `imagecorruptions`),
a maintained fork of the ImageNet-C reference functions that ships the frost textures frost
needs. This module makes it fit the harness: every call is deterministic (the global NumPy and
`random` states are seeded around it and restored afterwards, and the corruptions that draw
from their own generator get an explicit seed), images smaller than the package's 32-px
minimum are reflect-padded and cropped back, and the result is always uint8 H x W x 3 of the
input's size.

`Robustness` is what a `RunSpec` carries to ask for the evaluation; `evaluate_robustness`
scores the trained model of a run on corrupted copies of its test images.
"""
from __future__ import annotations

import random
import time
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bench.data.types import Dataset, Sample
from bench.errors import ConfigError
from bench.evaluate import evaluate
from bench.plugin import Predictor

# The 15 corruptions of the MDM paper's Figure 8 (REFERENCE §9), in the package's names.
PAPER_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "frost",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)  # fmt: skip
# The 15 "common" ImageNet-C corruptions (the benchmark's test set, without the 4 held-out ones).
IMAGENET_C: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
    "pixelate", "jpeg_compression",
)  # fmt: skip
ALL_CORRUPTIONS: tuple[str, ...] = IMAGENET_C + ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
MIN_SIDE = 32                        # the package refuses smaller images
_OWN_SEED = ("impulse_noise", "glass_blur")  # these draw from a generator of their own


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """`image` (H x W x 3 uint8) with corruption `name` at `severity` (0 = unchanged copy).

    Deterministic in (image, name, severity, seed); leaves the global random states as found.
    """
    if name not in ALL_CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(ALL_CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity {severity!r} is not one of 0..5")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    if severity == 0:
        return image.copy()
    from imagecorruptions import corrupt as _corrupt

    h, w = image.shape[:2]
    padded = np.pad(image, ((0, max(0, MIN_SIDE - h)), (0, max(0, MIN_SIDE - w)), (0, 0)), mode="reflect") \
        if min(h, w) < MIN_SIDE else image
    kwargs = {"seed": seed} if name in _OWN_SEED else {}
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        np.random.seed(seed)
        random.seed(seed)
        out = _corrupt(np.ascontiguousarray(padded), severity=severity, corruption_name=name, **kwargs)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    out = np.asarray(out)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    out = out[:h, :w, :3]
    if out.shape != image.shape:
        raise RuntimeError(f"corruption {name} returned shape {out.shape} for an image of {image.shape}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8) if out.dtype != np.uint8 else out


def corruption_seed(seed: int, image_name: str, name: str, severity: int) -> int:
    """One seed per (image, corruption, severity), stable across processes and runs, so every
    method and every seed of a cell is tested on exactly the same corrupted pixels."""
    return (zlib.crc32(f"{image_name}/{name}/{severity}".encode()) ^ (seed * 2654435761)) % 2**32


@dataclass(frozen=True)
class Robustness:
    """Which corrupted copies of the test images a run also predicts on (plain data: it pickles).

    `max_images` caps the test images that are corrupted (None: all), chosen evenly spaced over
    the test split so that e.g. both GlaS test parts are represented; `seed` is the base of the
    per-image corruption seeds.
    """

    corruptions: tuple[str, ...] = PAPER_CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    max_images: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        where = "robustness"
        if not self.corruptions or not self.severities:
            raise ConfigError(where, "corruptions/severities", "expected at least one of each")
        for name in self.corruptions:
            if name not in ALL_CORRUPTIONS:
                raise ConfigError(where, "corruptions",
                                  f"unknown corruption {name!r}; known: {', '.join(ALL_CORRUPTIONS)}")
        for s in self.severities:
            if s not in SEVERITIES:
                raise ConfigError(where, "severities", f"{s!r} is not one of 1..5")
        if len(set(self.corruptions)) != len(self.corruptions) or len(set(self.severities)) != len(self.severities):
            raise ConfigError(where, "corruptions/severities", "an entry is listed twice")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(where, "max_images", f"expected a positive number or none, got {self.max_images}")

    def identity(self) -> dict[str, Any]:
        """What enters the run's config hash."""
        return {"corruptions": list(self.corruptions), "severities": list(self.severities),
                "max_images": self.max_images, "seed": self.seed}

    def chosen(self, n: int) -> list[int]:
        """Indices of the test images to corrupt: all, or `max_images` evenly spaced ones."""
        if self.max_images is None or self.max_images >= n:
            return list(range(n))
        return sorted({int(round(i)) for i in np.linspace(0, n - 1, self.max_images)})


def corrupted_sample(sample: Sample, name: str, severity: int, seed: int) -> Sample:
    image = corrupt(sample.image, name, severity, corruption_seed(seed, sample.name, name, severity))
    return Sample(name=sample.name, image=image, semantic=sample.semantic, instances=sample.instances)


def evaluate_robustness(
    rob: Robustness, test: Dataset, clean_predictions: Sequence[np.ndarray], predict: Predictor
) -> dict[str, Any]:
    """Metrics of the trained model on each corrupted copy of the chosen test images.

    Returns {"images": names, "clean": metrics of the clean predictions on those images,
    "corruptions": {name: {str(severity): metrics}}, "seconds": wall time}. Corrupted images are
    made one (corruption, severity) at a time, so memory stays at one copy of the chosen images.
    """
    start = time.perf_counter()
    idx = rob.chosen(len(test))
    subset = [test[i] for i in idx]

    def as_dataset(samples: list[Sample]) -> Dataset:
        return Dataset(name=test.name, split=test.split, samples=samples, num_classes=test.num_classes,
                       domain=test.domain, ignore_index=test.ignore_index, class_names=test.class_names)

    clean, _ = evaluate(as_dataset(subset), [clean_predictions[i] for i in idx])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in rob.corruptions:
        out[name] = {}
        for severity in rob.severities:
            samples = [corrupted_sample(s, name, severity, rob.seed) for s in subset]
            key = f"{test.split}~{name}-{severity}-c{rob.seed}"  # its own feature-cache namespace
            predictions = [predict(s, key) for s in samples]
            out[name][str(severity)], _ = evaluate(as_dataset(samples), predictions)
    return {"images": [s.name for s in subset], "clean": clean, "corruptions": out,
            "seconds": time.perf_counter() - start}
