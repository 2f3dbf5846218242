"""Every number that shapes the synthetic-glands data set, in one place.

The cache folder name hashes this whole config (plus a generator version), so changing any field
regenerates the data instead of silently reusing stale images.
"""
from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class SyntheticGlandsConfig:
    """Sizes, seed and look of the generated set; colours are RGB in [0, 1], lengths in pixels."""

    n_train: int = 16
    n_test: int = 8
    height: int = 128
    width: int = 160
    seed: int = 0

    # gland geometry
    glands_per_image: tuple[int, int] = (3, 6)
    gland_radius: tuple[float, float] = (13.0, 24.0)
    max_elongation: float = 1.8
    boundary_orders: tuple[int, ...] = (2, 3, 4, 5)
    boundary_wiggle: float = 0.07
    rim_fraction: tuple[float, float] = (0.45, 0.65)
    lumen_wobble: float = 0.05
    touching_probability: float = 0.35
    touch_distance: float = 0.85  # centre distance / (sum of radii) for touching glands
    separation: float = 1.1  # the same ratio for glands that must not touch
    centre_margin: float = 0.05  # centres keep this fraction of the size from the border
    placement_attempts: int = 200

    # appearance (H&E-like: eosin pink stroma, haematoxylin purple epithelium and nuclei)
    stroma_rgb: RGB = (0.89, 0.58, 0.80)
    epithelium_rgb: RGB = (0.66, 0.40, 0.74)
    lumen_rgb: RGB = (0.96, 0.90, 0.95)
    nucleus_rgb: RGB = (0.30, 0.14, 0.50)
    fibre_sigma: tuple[float, float] = (0.8, 4.0)
    fibre_contrast: float = 0.07
    texture_contrast: float = 0.04
    edge_blur: float = 0.8
    nucleus_sigma: float = 1.1
    nuclei_band: float = 0.5  # nuclei sit in this outer fraction of the rim
    gland_nuclei_density: float = 0.05
    stroma_nuclei_density: float = 0.0025
    pixel_noise: float = 0.015

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_test


SYNTHETIC_GLANDS = SyntheticGlandsConfig()
