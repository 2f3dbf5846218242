"""The shared supervised trainer's pieces: losses, validation split, crops."""
from __future__ import annotations

import math

import numpy as np
import torch

from bench.data.types import Sample
from bench.losses import BCEDiceWeights, bce_dice, dice_ce, scores_from_logits
from bench.supervised import random_crop, split_validation


def test_weighted_bce_dice_equals_a_hand_computed_value() -> None:
    # Two pixels: logit 0 on a foreground pixel, logit ln(3) on a background pixel.
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    target = torch.tensor([1, 0]).view(1, 1, 1, 2)
    w = BCEDiceWeights()
    p = [0.5, 0.75]
    bce_pos, bce_neg = -math.log(0.5), -math.log(1 - 0.75)
    weighted_bce = w.positive * bce_pos / 1 + w.negative * bce_neg / 1
    inter, union = p[0] * 1, p[0] ** 2 + p[1] ** 2 + 1
    dice = 1 - (2 * inter + w.smooth) / (union + w.smooth)
    expected = w.bce * weighted_bce + w.dice * dice
    assert math.isclose(bce_dice(w)(logits, target).item(), expected, rel_tol=1e-6)


def test_dice_ce_ignores_ignore_pixels() -> None:
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 1, 8, 8))
    noisy = target.clone()
    noisy[:, :, :4] = 255
    loss = dice_ce(3, 255)
    changed = logits.clone()
    changed[:, :, :4] = 50 * torch.randn_like(changed[:, :, :4])  # only ignored pixels change
    assert torch.isclose(loss(logits, noisy), loss(changed, noisy))
    assert loss(logits, target) > 0


def test_sigmoid_scores_are_two_class_probabilities() -> None:
    scores = scores_from_logits(torch.zeros(1, 1, 2, 2), 2)
    assert scores.shape == (1, 2, 2, 2) and torch.allclose(scores.sum(1), torch.ones(1, 2, 2))


def _samples(n: int) -> list[Sample]:
    z = np.zeros((4, 4), np.int64)
    return [Sample(f"s{i}", np.zeros((4, 4, 3), np.uint8), z) for i in range(n)]


def test_validation_split_is_deterministic_disjoint_and_seed_dependent() -> None:
    fit, val = split_validation(_samples(8), 0.2, seed=3)
    assert len(val) == 2 and len(fit) == 6
    assert {s.name for s in fit}.isdisjoint(s.name for s in val)
    assert [s.name for s in split_validation(_samples(8), 0.2, seed=3)[1]] == [s.name for s in val]
    assert len({tuple(s.name for s in split_validation(_samples(8), 0.2, seed=k)[1]) for k in range(10)}) > 1
    fit, val = split_validation(_samples(1), 0.2, seed=0)
    assert len(fit) == 1 and val == []


def test_random_crop_pads_small_images() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = random_crop(torch.ones(3, 10, 20), torch.ones(10, 20, dtype=torch.long), 16, gen)
    assert x.shape == (3, 16, 16) and y.shape == (16, 16)
    assert y[10:].sum() == 0  # padded labels are background
