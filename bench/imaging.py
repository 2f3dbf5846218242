"""Image <-> tensor conversions and the resizing that presets use to stay small.

Predictions are always mapped back to each image's original resolution before any metric is
computed, so a preset that works on downscaled images still reports metrics on the real labels.
How small an image may become is `bench.data.scale.working_size` (a preset's cap, floored by the
size of its data set's objects).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.scale import working_size


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1]."""
    return torch.as_tensor(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None].div_(255.0)


def target_size(hw: tuple[int, int], max_side: int | None, floor: float = 0.0) -> tuple[int, int]:
    """The working size (`bench.data.scale.working_size`): the longest side capped at `max_side`,
    shrunk by no more than `floor` (the data set's `scale_floor`; 0 = the cap alone), aspect kept."""
    return working_size(hw, max_side, floor)


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


def round_trip(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A binary map taken to `size` as images are (antialiased bilinear) and back as predictions
    are (bilinear scores, argmax): what a perfect prediction at the working size becomes at the
    native size. The instances lost on the way bound every method's instance scores there."""
    mask = np.asarray(mask)
    small = resize_image(torch.from_numpy(mask != 0).float()[None, None], size)
    return scores_to_labels(torch.cat([1 - small, small], 1)[0], (mask.shape[0], mask.shape[1]))
