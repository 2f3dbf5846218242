"""Patch masking (MDM, REFERENCE §3): keep a random int(L * (1 - ratio)) of the L patches."""
from __future__ import annotations

import torch


def visible_count(num_patches: int, ratio: float) -> int:
    return int(num_patches * (1 - ratio))


def patch_keep_mask(batch: int, hw: tuple[int, int], patch: int, ratios: torch.Tensor,
                    gen: torch.Generator) -> torch.Tensor:
    """B x 1 x H x W float mask, 1 on kept patches; sample b keeps int(L * (1 - ratios[b])) patches."""
    h, w = hw
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch}")
    gh, gw = h // patch, w // patch
    num = gh * gw
    scores = torch.rand(batch, num, generator=gen)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    keep = torch.tensor([visible_count(num, float(r)) for r in ratios]).view(batch, 1)
    grid = (ranks < keep).float().view(batch, 1, gh, gw)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def mask_patches(x: torch.Tensor, t: torch.Tensor, steps: int, patch: int, gen: torch.Generator) -> torch.Tensor:
    """MDM's corruption: masked patches set to 0 (mid-grey in [-1, 1]); ratio t / T, no noise."""
    keep = patch_keep_mask(x.shape[0], (x.shape[-2], x.shape[-1]), patch, t.float().cpu() / steps, gen)
    return x * keep.to(x.device, x.dtype)
