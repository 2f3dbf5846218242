"""How much a probe ensemble disagrees: the Jensen-Shannon filter of DatasetDDPM / DatasetGAN.

Per pixel, the ensemble's Jensen-Shannon divergence is the entropy of the members' mean
softmax minus the members' mean entropy (0 when all members agree, large when confident
members contradict each other). An image's uncertainty is the mean over its most divergent
`top_fraction` of pixels (ddpm-segmentation: the top 10%); the synthetic images with the
highest uncertainty are dropped before the segmentation network is trained on them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.probe.mlp import EnsembleMLP
from bench.probe.predict import chunk_logits


def js_divergence(logits: Tensor) -> Tensor:
    """(K members, N pixels, C classes) logits -> (N,) Jensen-Shannon divergence, in nats."""
    log_p = logits.float().log_softmax(dim=-1)
    member_entropy = -(log_p.exp() * log_p).sum(-1).mean(0)
    mean = log_p.exp().mean(0)
    return -torch.special.xlogy(mean, mean).sum(-1) - member_entropy


def image_uncertainty(js: Tensor, top_fraction: float) -> float:
    """Mean JS divergence of the `top_fraction` most divergent pixels (at least one)."""
    k = max(1, int(js.numel() * top_fraction))
    return float(js.flatten().topk(k).values.mean())


def majority_vote(logits: Tensor) -> Tensor:
    """(K, N, C) -> (N,) the class most members pick (ties to the lower class index)."""
    votes = F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).sum(dim=0)
    return votes.argmax(dim=-1)


@torch.no_grad()
def label_with_uncertainty(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                           scale: float, top_fraction: float) -> tuple[np.ndarray, float]:
    """One image's (H, W) majority-vote labels and its ensemble uncertainty."""
    labels = torch.empty(out_hw, dtype=torch.int64)
    js = torch.empty(out_hw)
    for r0, r1, logits in chunk_logits(probe, maps, out_hw, scale, None):
        labels[r0:r1] = majority_vote(logits).view(r1 - r0, out_hw[1]).cpu()
        js[r0:r1] = js_divergence(logits).view(r1 - r0, out_hw[1]).cpu()
    return labels.numpy(), image_uncertainty(js, top_fraction)


def keep_certain(uncertainty: Sequence[float], drop_fraction: float, skip_certain: int = 0) -> list[int]:
    """Indices (ascending) of the images kept: all but the `drop_fraction` most uncertain.

    `skip_certain` reproduces ddpm-segmentation's train_deeplab.py, which keeps
    `order[30 : -n_drop + 30]` of the images sorted by uncertainty: the same number of images
    is dropped, `skip_certain` of them the most certain ones (at most as many as are dropped).
    """
    if not 0 <= drop_fraction < 1:
        raise ValueError(f"drop fraction must be in [0, 1), got {drop_fraction}")
    order = np.argsort(np.asarray(uncertainty, dtype=np.float64), kind="stable")
    n_drop = int(len(order) * drop_fraction)
    skip = min(skip_certain, n_drop)
    return sorted(order[skip : len(order) - n_drop + skip].tolist())
