"""Segmentation losses of the supervised recipes (REFERENCE §8), with ignore-label support."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BCEDiceWeights:
    """UCTransNet's WeightedDiceBCE: 0.5 BCE + 0.5 Dice, BCE class weights (positive, negative)."""

    bce: float = 0.5
    dice: float = 0.5
    positive: float = 0.4
    negative: float = 0.6
    smooth: float = 1e-5


def soft_dice_loss(probs: torch.Tensor, onehot: torch.Tensor, valid: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """1 - mean over classes of the soft Dice over the whole batch, on valid pixels only."""
    probs, onehot = probs * valid, onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def dice_ce(num_classes: int, ignore: int) -> Loss:
    """Cross-entropy plus soft Dice (MONAI's DiceCE recipe), ignoring `ignore` pixels."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target[:, 0].long()
        valid = (target != ignore)[:, None].float()
        safe = torch.where(target == ignore, 0, target)
        onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
        ce = F.cross_entropy(logits, target, ignore_index=ignore)
        return ce + soft_dice_loss(logits.softmax(1), onehot, valid)

    return loss


def cross_entropy(num_classes: int, ignore: int) -> Loss:
    return lambda logits, target: F.cross_entropy(logits, target[:, 0].long(), ignore_index=ignore)


def bce_dice(weights: BCEDiceWeights = BCEDiceWeights()) -> Loss:
    """Weighted BCE + weighted soft Dice on one foreground logit channel (UCTransNet)."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        truth = (target > 0).float()
        prob = torch.sigmoid(logits)
        bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
        pos, neg = truth, 1 - truth
        weighted_bce = (weights.positive * pos * bce / (pos.sum() + 1e-12)
                        + weights.negative * neg * bce / (neg.sum() + 1e-12)).sum()
        p, t = prob.flatten(1), truth.flatten(1)
        inter = (p * t).sum(1)
        union = (p * p).sum(1) + (t * t).sum(1)
        dice = (1 - (2 * inter + weights.smooth) / (union + weights.smooth)).mean()
        return weights.bce * weighted_bce + weights.dice * dice

    return loss


def build_loss(name: str, num_classes: int, ignore: int) -> Loss:
    if name == "dice_ce":
        return dice_ce(num_classes, ignore)
    if name == "ce":
        return cross_entropy(num_classes, ignore)
    if name == "bce_dice":
        return bce_dice()
    raise ValueError(f"unknown loss {name!r}; expected dice_ce, ce or bce_dice")


def scores_from_logits(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class probabilities B x C x H x W, from softmax logits or one sigmoid foreground channel."""
    if logits.shape[1] == 1 and num_classes == 2:
        fg = torch.sigmoid(logits)
        return torch.cat([1 - fg, fg], dim=1)
    return logits.softmax(1)
