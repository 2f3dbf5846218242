"""Drawing one histology-like image: pink fibrous stroma with glands.

A gland is an irregular blob: a purple epithelial rim with dark nuclei near its outer (basal) edge
around a pale lumen. Each pixel inside any blob belongs to the gland whose normalised radius is
smallest there, so blobs placed with a slight overlap become touching glands with a shared border.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from bench.data.synthetic_config import SyntheticGlandsConfig


@dataclass(frozen=True)
class Gland:
    cy: float
    cx: float
    radius: float
    elongation: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...]  # (order, amplitude, phase) boundary wiggles
    rim: float  # epithelium thickness as a fraction of the normalised radius


def _new_gland(rng: np.random.Generator, cfg: SyntheticGlandsConfig, cy: float, cx: float, radius: float) -> Gland:
    harmonics = tuple((k, float(rng.uniform(0.0, cfg.boundary_wiggle)), float(rng.uniform(0, 2 * np.pi)))
                      for k in cfg.boundary_orders)
    return Gland(cy, cx, radius, float(rng.uniform(1.0, cfg.max_elongation)),
                 float(rng.uniform(0, np.pi)), harmonics, float(rng.uniform(*cfg.rim_fraction)))


def _fits(cy: float, cx: float, radius: float, glands: list[Gland], factor: float) -> bool:
    return all(np.hypot(cy - g.cy, cx - g.cx) >= factor * (radius + g.radius) for g in glands)


def place_glands(rng: np.random.Generator, cfg: SyntheticGlandsConfig) -> list[Gland]:
    """Random glands: some touching an earlier one, the rest separated by stroma."""
    target = int(rng.integers(cfg.glands_per_image[0], cfg.glands_per_image[1] + 1))
    glands: list[Gland] = []
    for _ in range(cfg.placement_attempts):
        if len(glands) == target:
            break
        radius = float(rng.uniform(*cfg.gland_radius))
        touching = bool(glands) and rng.random() < cfg.touching_probability
        if touching:
            other = glands[int(rng.integers(len(glands)))]
            theta = rng.uniform(0, 2 * np.pi)
            dist = cfg.touch_distance * (radius + other.radius)
            cy, cx = other.cy + dist * np.sin(theta), other.cx + dist * np.cos(theta)
            factor = cfg.touch_distance * 0.95
        else:
            cy = rng.uniform(cfg.centre_margin, 1 - cfg.centre_margin) * cfg.height
            cx = rng.uniform(cfg.centre_margin, 1 - cfg.centre_margin) * cfg.width
            factor = cfg.separation
        inside = 0 <= cy < cfg.height and 0 <= cx < cfg.width
        if inside and _fits(cy, cx, radius, glands, factor):
            glands.append(_new_gland(rng, cfg, float(cy), float(cx), radius))
    return glands


def normalised_radius(g: Gland, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """< 1 inside the gland, 1 on its wiggly boundary, growing outwards."""
    dy, dx = yy - g.cy, xx - g.cx
    cos, sin = np.cos(g.angle), np.sin(g.angle)
    u = (dx * cos + dy * sin) / (g.radius * np.sqrt(g.elongation))
    v = (-dx * sin + dy * cos) * np.sqrt(g.elongation) / g.radius
    phi = np.arctan2(v, u)
    boundary = np.ones_like(phi)
    for order, amplitude, phase in g.harmonics:
        boundary += amplitude * np.cos(order * phi + phase)
    return np.hypot(u, v) / boundary


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / (field.std() + 1e-12)


def _dots(rng: np.random.Generator, where: np.ndarray, density: float, sigma: float) -> np.ndarray:
    """Soft round blobs (nuclei) at random pixels of `where`, peak opacity about 1."""
    candidates = np.flatnonzero(where)
    impulses = np.zeros(where.shape)
    count = rng.binomial(candidates.size, density) if candidates.size else 0
    impulses.flat[rng.choice(candidates, size=count, replace=False)] = 1.0
    blobs = gaussian_filter(impulses, sigma) * (2 * np.pi * sigma**2)
    return np.clip(blobs * 1.6, 0.0, 1.0)


def _mix(base: np.ndarray, colour: tuple[float, float, float], alpha: np.ndarray) -> np.ndarray:
    return base * (1 - alpha[..., None]) + np.asarray(colour) * alpha[..., None]


def render(rng: np.random.Generator, cfg: SyntheticGlandsConfig) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 image, H x W uint8 instance map with 0 = stroma, 1..K = glands)."""
    shape = (cfg.height, cfg.width)
    yy, xx = np.mgrid[0:cfg.height, 0:cfg.width].astype(np.float64)
    glands = place_glands(rng, cfg)
    rho = np.stack([normalised_radius(g, yy, xx) for g in glands]) if glands else np.full((1, *shape), np.inf)
    owner = rho.argmin(axis=0)
    own_rho = np.take_along_axis(rho, owner[None], axis=0)[0]
    inside = own_rho < 1.0
    anno = np.where(inside, owner + 1, 0).astype(np.uint8)
    rims = np.array([g.rim for g in glands] or [0.0])[owner]
    wobble = cfg.lumen_wobble * _smooth_noise(rng, shape, 2.0)
    lumen = inside & (own_rho + wobble < 1.0 - rims)
    basal = inside & ~lumen & (own_rho > 1.0 - rims * cfg.nuclei_band)

    fibres = _smooth_noise(rng, shape, cfg.fibre_sigma if rng.random() < 0.5 else cfg.fibre_sigma[::-1])
    image = np.broadcast_to(np.asarray(cfg.stroma_rgb), (*shape, 3)) * (1 + cfg.fibre_contrast * fibres[..., None])
    image = _mix(image, cfg.epithelium_rgb, gaussian_filter(inside.astype(float), cfg.edge_blur))
    image = _mix(image, cfg.lumen_rgb, gaussian_filter(lumen.astype(float), cfg.edge_blur))
    image = image * (1 + cfg.texture_contrast * _smooth_noise(rng, shape, 1.0)[..., None])
    nuclei = np.maximum(_dots(rng, basal, cfg.gland_nuclei_density, cfg.nucleus_sigma),
                        _dots(rng, ~inside, cfg.stroma_nuclei_density, cfg.nucleus_sigma))
    image = _mix(image, cfg.nucleus_rgb, nuclei)
    image = image + cfg.pixel_noise * rng.standard_normal(image.shape)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), anno
