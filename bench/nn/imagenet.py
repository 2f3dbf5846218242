"""ImageNet input normalisation, which MAE and SwAV expect (REFERENCE §5)."""
from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(x01: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W in [0, 1] -> per-channel standardised with ImageNet's statistics."""
    mean = torch.tensor(IMAGENET_MEAN, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x01.device, dtype=x01.dtype).view(1, 3, 1, 1)
    return (x01 - mean) / std
