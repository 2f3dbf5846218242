"""Image <-> tensor conversions and the resizing that presets use to stay small.

Predictions are always mapped back to each image's original resolution before any metric is
computed, so a preset that works on downscaled images still reports metrics on the real labels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1]."""
    return torch.as_tensor(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None].div_(255.0)


def target_size(hw: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The working size: the longest side capped at `max_side`, aspect ratio kept."""
    h, w = hw
    if max_side is None or max(h, w) <= max_side:
        return h, w
    factor = max_side / max(h, w)
    return max(1, round(h * factor)), max(1, round(w * factor))


def resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer map (class or instance ids stay valid)."""
    if labels.shape == tuple(size):
        return labels
    t = torch.from_numpy(labels.astype(np.int64))[None, None].float()
    return F.interpolate(t, size=size, mode="nearest-exact")[0, 0].long().numpy()


def scores_to_labels(scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """C x h x w class scores -> H x W class map at the original size (scores resized, then argmax)."""
    if tuple(scores.shape[-2:]) != tuple(size):
        scores = F.interpolate(scores[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return scores.argmax(0).numpy().astype(np.int64)
