"""The pre-training loop's recipe hooks: RandomResizedCrop, warm-up + cosine lr, weight-decay
exclusions, and the EMA's start and warm-up (bench.pretrain), each against a plain restatement."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.pretrain import PretrainSchedule, crop_batch, lr_at, param_groups, pretrain, resized_crop_box

IMAGES = [np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8) for i in range(2)]


@pytest.mark.parametrize("hw", [(120, 160), (170, 128), (64, 64)])
def test_resized_crop_boxes_cover_the_scale_and_ratio_ranges(hw: tuple[int, int]) -> None:
    h, w = hw
    gen = torch.Generator().manual_seed(0)
    boxes = [resized_crop_box(h, w, (0.2, 1.0), gen) for _ in range(3000)]
    fractions, ratios = [], []
    for top, left, ch, cw in boxes:
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w  # inside the image
        fractions.append(ch * cw / (h * w))
        ratios.append(cw / ch)
    slack = 2.5 / min(h, w)  # the box's sides are rounded to whole pixels
    assert min(fractions) >= 0.2 - 2 * slack and max(fractions) <= 1.0
    assert min(fractions) < 0.25 and max(fractions) > 0.85  # the whole range is drawn
    fitted = [r for r, f in zip(ratios, fractions) if f < 0.999]  # not the full-image fallback
    assert min(fitted) >= 3 / 4 - 2 * slack and max(fitted) <= 4 / 3 + 2 * slack
    assert len({(b[0], b[1]) for b in boxes}) > 100  # positions vary


def test_resized_crop_falls_back_to_a_centre_crop_at_the_nearest_ratio() -> None:
    gen = torch.Generator().manual_seed(0)
    # A 10 x 200 strip: no box of ratio <= 4/3 and area >= 90% fits, so torchvision's fallback.
    top, left, ch, cw = resized_crop_box(10, 200, (0.9, 1.0), gen)
    assert (ch, cw) == (10, round(10 * 4 / 3)) and top == 0 and left == (200 - cw) // 2


def test_resized_crops_are_resized_bounded_and_differ_between_steps() -> None:
    pool = [torch.rand(3, 40, 50) * 2 - 1 for _ in range(2)]
    gen = torch.Generator().manual_seed(0)
    a = crop_batch(pool, 24, 4, True, gen, scale=(0.2, 1.0))
    b = crop_batch(pool, 24, 4, True, gen, scale=(0.2, 1.0))
    assert a.shape == b.shape == (4, 3, 24, 24)
    assert a.min() >= -1 and a.max() <= 1 and not torch.equal(a, b)
    # Data-parallel shards draw the same boxes in lockstep: kept crops equal the whole batch's.
    whole = crop_batch(pool, 24, 4, True, torch.Generator().manual_seed(5), scale=(0.2, 1.0))
    part = crop_batch(pool, 24, 4, True, torch.Generator().manual_seed(5), keep=range(2, 4), scale=(0.2, 1.0))
    assert torch.equal(part, whole[2:])


def _mae_lr(lr: float, epoch: float, warmup_epochs: float, epochs: float, min_lr: float = 0.0) -> float:
    """MAE's util/lr_sched.adjust_learning_rate, at a fractional epoch (step / steps per epoch)."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def test_warmup_cosine_lr_is_maes_per_iteration_schedule() -> None:
    per_epoch, epochs, warmup = 5, 20, 2
    sched = PretrainSchedule(steps=per_epoch * epochs, batch=2, crop=16, lr=1e-3, lr_schedule="warmup_cosine",
                             warmup_steps=per_epoch * warmup)
    for step in range(sched.steps):
        assert math.isclose(lr_at(sched, step), _mae_lr(1e-3, step / per_epoch, warmup, epochs), abs_tol=1e-15)
    assert lr_at(sched, 0) == 0.0 and math.isclose(lr_at(sched, 5), 5e-4)  # from 0, linear
    assert math.isclose(lr_at(sched, 10), 1e-3) and math.isclose(lr_at(sched, 55), 5e-4)  # peak; half-way down
    assert lr_at(PretrainSchedule(steps=10, batch=2, crop=16, lr=1e-3), 7) == 1e-3  # constant by default


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.token = nn.Parameter(torch.ones(1, 1, 4))
        self.register_buffer("pos", torch.zeros(4))


def test_biases_and_norms_are_excluded_from_weight_decay() -> None:
    toy = _Toy()
    plain, decayed = param_groups(toy, 0.05, exclusions=True)
    assert plain["weight_decay"] == 0.0 and decayed["weight_decay"] == 0.05
    names = {id(p): n for n, p in toy.named_parameters()}
    assert {names[id(p)] for p in plain["params"]} == {"linear.bias", "norm.weight", "norm.bias"}
    assert {names[id(p)] for p in decayed["params"]} == {"linear.weight", "token"}  # timm 0.3.2: tokens decayed
    (one,) = param_groups(toy, 0.05, exclusions=False)
    assert len(one["params"]) == 5 and one["weight_decay"] == 0.05


def _run(model: nn.Module, sched: PretrainSchedule, loss) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return pretrain(model, IMAGES, sched, loss, torch.device("cpu"), seed=0)


def test_the_loop_applies_the_lr_schedule_and_the_decay_groups() -> None:
    torch.manual_seed(0)
    toy = _Toy()
    before = {k: v.clone() for k, v in toy.state_dict().items()}
    sched = PretrainSchedule(steps=12, batch=2, crop=16, lr=0.01, weight_decay=0.5, decay_exclusions=True,
                             lr_schedule="warmup_cosine", warmup_steps=3)
    zero = lambda m, x, g: sum((p * 0).sum() for p in m.parameters())  # noqa: E731  zero gradients: decay alone moves weights
    after = _run(toy, sched, zero)
    for key in ("linear.bias", "norm.weight", "norm.bias"):
        assert torch.equal(after[key], before[key])
    shrink = math.prod(1 - lr_at(sched, s) * 0.5 for s in range(sched.steps))  # AdamW's decoupled decay
    for key in ("linear.weight", "token"):
        assert torch.allclose(after[key], before[key] * shrink, rtol=1e-5)


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))


def _ema_restated(decay: float, steps: int, lr: float, start: str, warmup: bool) -> float:
    """The EMA of theta_k = k * lr (Adam on a constant gradient moves theta by lr a step)."""
    thetas = [k * lr for k in range(steps + 1)]
    if start == "initial":
        ema, n, first = thetas[0], 1, 1
    else:
        ema, n, first = thetas[1], 1, 2
    for k in range(first, steps + 1):
        r = min(decay, (1 + n) / (10 + n)) if warmup else decay
        ema = r * ema + (1 - r) * thetas[k]
        n += 1
    return ema


@pytest.mark.parametrize("start,warmup", [("first_step", False), ("initial", False), ("first_step", True)])
def test_ema_starts_and_warms_up_as_stated(start: str, warmup: bool) -> None:
    steps, lr, decay = 20, 0.01, 0.9
    sched = PretrainSchedule(steps=steps, batch=2, crop=16, lr=lr, ema_decay=decay, ema_start=start,  # type: ignore[arg-type]
                             ema_warmup=warmup)
    out = _run(_Scalar(), sched, lambda m, x, g: -m.p)
    assert math.isclose(float(out["p"]), _ema_restated(decay, steps, lr, start, warmup), rel_tol=1e-5)
    # guided-diffusion's EMA (from the initial weights) still holds decay^steps of them.
    if start == "initial":
        assert math.isclose(float(out["p"]), sum((1 - decay) * decay ** (steps - k) * k * lr
                                                 for k in range(1, steps + 1)), rel_tol=1e-5)
