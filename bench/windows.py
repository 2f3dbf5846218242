"""Tiling and gaussian-blended sliding-window inference, shared by the probes and the trainer.

The window grid and the blending follow MONAI's `sliding_window_inference` (REFERENCE §2: window
256, overlap 0.2, gaussian) and a test checks that they agree. We keep our own loop because the
probes cache each window's backbone features across the ten seeds of a cell, which needs stable
window positions that MONAI does not expose.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

GAUSSIAN_SIGMA_SCALE = 0.125  # MONAI's default for mode="gaussian"

Predictor = Callable[[torch.Tensor, list[tuple[int, int]]], torch.Tensor]


def tile_positions(size: int, window: int) -> list[int]:
    """Window starts that cover [0, size) with non-overlapping windows, the last one flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, window))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def scan_starts(size: int, window: int, overlap: float) -> list[int]:
    """MONAI's window starts along one axis: stride int(window * (1 - overlap)), last flush."""
    if size <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    starts, start = [], 0
    while True:
        starts.append(min(start, size - window))
        if start + window >= size:
            return starts
        start += stride


def window_grid(hw: tuple[int, int], window: int, overlap: float) -> list[tuple[int, int]]:
    return [(y, x) for y in scan_starts(hw[0], window, overlap) for x in scan_starts(hw[1], window, overlap)]


@functools.lru_cache(maxsize=8)
def gaussian_weights(window: int) -> torch.Tensor:
    from monai.data.utils import compute_importance_map  # imported here: monai takes seconds to import

    return compute_importance_map((window, window), mode="gaussian", sigma_scale=GAUSSIAN_SIGMA_SCALE,
                                  device="cpu").float()


def pad_to_window(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-pad (bottom and right) an image smaller than the window; scores are cropped back."""
    pad_h, pad_w = max(0, window - x.shape[-2]), max(0, window - x.shape[-1])
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def sliding_window_predict(x: torch.Tensor, window: int, overlap: float, batch: int,
                           predictor: Predictor) -> torch.Tensor:
    """1 x 3 x H x W image -> 1 x C x H x W blended scores.

    `predictor(crops, positions)` maps a B x 3 x w x w batch (and the windows' top-left corners)
    to B x C x w x w scores.
    """
    H, W = x.shape[-2:]
    padded = pad_to_window(x, window)
    grid = window_grid((padded.shape[-2], padded.shape[-1]), window, overlap)
    weights = gaussian_weights(window)
    total: torch.Tensor | None = None
    norm = torch.zeros(padded.shape[-2:])
    for i in range(0, len(grid), batch):
        chunk = grid[i : i + batch]
        crops = torch.cat([padded[..., y : y + window, x0 : x0 + window] for y, x0 in chunk])
        scores = predictor(crops, chunk).float().cpu()
        if total is None:
            total = torch.zeros(scores.shape[1], *padded.shape[-2:])
        for (y, x0), s in zip(chunk, scores):
            total[:, y : y + window, x0 : x0 + window] += s * weights
            norm[y : y + window, x0 : x0 + window] += weights
    assert total is not None
    return (total / norm)[None, :, :H, :W]
