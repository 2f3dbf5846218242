"""The shared supervised trainer: every baseline is a network plus a recipe on this loop.

Trains on the labelled subset of a cell, early-stops on a validation split carved from it by
seed, predicts full images by sliding window (or by resizing, for networks with a fixed input
size) and maps predictions back to each image's original resolution.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, is_dataclass
from typing import Any, Callable, ClassVar, Iterable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LRScheduler

from bench.context import RunContext, RunOutput
from bench.data.scale import scale_record, spec_floor
from bench.data.types import Dataset, Sample
from bench.device import autocast, prepare_batch, retained_memory, to_device
from bench.imaging import resize_image, resize_labels, scores_to_labels, target_size, to_tensor
from bench.limits import NON_NEGATIVE, POSITIVE, UNIT, Limit, Rule, check_fields
from bench.losses import build_loss, scores_from_logits
from bench.nn.imagenet import imagenet_normalise
from bench.official import LastBatchStop, train_loop
from bench.plugin import Plugin, Predictor
from bench.progress import SETTINGS, History, StageLog
from bench.protocol import PROTOCOL_LEGACY, ProtocolName, SubsetRule
from bench.resume import loop_state
from bench.steptime import STEPS
from bench.windows import sliding_window_predict

# The names each enumerated field of a recipe takes (a plugin's Config that changes a default
# annotates the field with the same alias, so the name stays checked).
Optimizer = Literal["adam", "adamw"]
Scheduler = Literal["none", "cosine_warm_restarts"]
LossName = Literal["dice_ce", "ce", "bce_dice"]
Augment = Literal["flip_rot90", "hflip", "rot_flip_or_rotate", "none"]
EpochMode = Literal["steps", "pass"]


@dataclass(frozen=True)
class SupervisedConfig:
    """A recipe: the knobs every supervised baseline shares; a plugin's Config subclasses this."""

    max_side: int | None = None        # downscale images whose longest side exceeds this
    input_size: int | None = None      # fixed network input: resize whole images (else crops)
    crop: int = 256                    # training crop and sliding window when input_size is None
    overlap: float = 0.2
    batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Optimizer = "adam"
    scheduler: Scheduler = "none"
    restart_period: int = 10           # T_0 of cosine warm restarts, in epochs
    min_lr: float = 1e-4
    loss: LossName = "dice_ce"
    augment: Augment = "flip_rot90"
    rotate_degrees: float = 20.0       # rot_flip_or_rotate: the free rotation's largest angle
    max_epochs: int = 100
    epoch_mode: EpochMode = "steps"    # steps: steps_per_epoch random batches | pass: one shuffled pass
    steps_per_epoch: int = 20
    patience: int = 10                 # epochs without a better validation Dice
    val_fraction: float = 0.2
    protocol: ProtocolName = "converged"   # converged: the recipe above | official: bench.official's loop
    subset: SubsetRule | None = None   # labelled subset; None: the protocol's (official sorted, else random)
    normalize: Literal["none", "imagenet"] = "none"  # network input: [0, 1] or ImageNet-standardised

    # What protocol "official" fixes (zx-pan/mdm train_unet.py, REFERENCE §8): cross-entropy, Adam
    # 1e-3, no validation split, no augmentation beyond the random crop, one shuffled pass an epoch,
    # at most 5,000 epochs, ImageNet-normalised input, sliding windows overlapping by 0.2. The
    # stopping counts and the MoNuSeg batch are per data set (bench.official).
    OFFICIAL: ClassVar[dict[str, Any]] = dict(
        loss="ce", lr=1e-3, optimizer="adam", weight_decay=0.0, scheduler="none", augment="none",
        val_fraction=0.0, epoch_mode="pass", max_epochs=5000, batch=8, input_size=None, overlap=0.2,
        normalize="imagenet")
    LEGACY: ClassVar[dict[str, Any]] = {**PROTOCOL_LEGACY, "normalize": "none"}

    # What each number may be (bench.limits; a plugin's Config adds its own fields' limits).
    LIMITS: ClassVar[dict[str, Rule]] = {
        "max_side": POSITIVE, "input_size": POSITIVE, "crop": POSITIVE, "overlap": UNIT, "batch": POSITIVE,
        "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "restart_period": POSITIVE, "min_lr": NON_NEGATIVE,
        "rotate_degrees": Limit(0, 180), "max_epochs": POSITIVE, "steps_per_epoch": POSITIVE,
        "patience": POSITIVE, "val_fraction": Limit(0, 1, high_open=True, note="0: no validation split"),
    }

    def __post_init__(self) -> None:
        check_fields(self)


# The recipe every crop-based `small` baseline shares (docs/small-preset.md): images at most 256 px
# on their long side, 128-px crops and windows, early stopping on validation Dice.
SMALL_RECIPE: dict[str, Any] = dict(max_side=256, crop=128, batch=8, max_epochs=80,
                                       steps_per_epoch=20, patience=15)


# The `paper` recipe of the crop-based MONAI / smp baselines under protocol "converged" (under
# "official", the paper preset's default, the official loop's pins replace it). Their published
# papers give none, so this is ours: 256-px crops, batch 8, Adam 1e-3, up to 200 epochs of 50 steps,
# early stopping after 20 epochs without a better validation Dice.
PAPER_RECIPE: dict[str, Any] = dict(crop=256, batch=8, lr=1e-3, max_epochs=200, steps_per_epoch=50, patience=20)

# The protocol of every baseline's `paper` preset: the loop that produced the published numbers.
# Its recipe above (or a plugin's own) is what `protocol = "converged"` runs instead.
PAPER_PROTOCOL: ProtocolName = "official"


class SupervisedMethod(Plugin):
    """A segmentation network trained from scratch on the labelled images only."""

    kind = "supervised"
    drop_last: ClassVar[bool] = False  # pass epochs: drop a last, smaller batch (BatchNorm on 1 image fails)

    @classmethod
    def definition_problems(cls) -> list[str]:
        out = super().definition_problems()
        config = getattr(cls, "Config", None)
        if isinstance(config, type) and is_dataclass(config) and not issubclass(config, SupervisedConfig):
            out.append(f"Config {config.__name__} does not subclass bench.supervised.SupervisedConfig")
        return out

    def out_channels(self, num_classes: int) -> int:
        return 1 if self.cfg.loss == "bce_dice" and num_classes == 2 else num_classes

    def run(self, ctx: RunContext, train: Sequence[Sample], test: Dataset,
            on_trained: Callable[[Predictor], None] | None = None) -> RunOutput:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        official = self.cfg.protocol == "official"
        fit, val = (list(train), []) if official else split_validation(list(train), self.cfg.val_fraction, ctx.spec.seed)
        with ctx.run_checkpoint("train"):  # a requeued job continues training where it stopped
            if official:
                model = self.train_official(fit, test.num_classes, test.ignore_index, ctx)
            else:
                model = self.train(fit, val, test.num_classes, test.ignore_index, ctx)
        timings["train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        predictions = [self.predict(model, s.image, test.num_classes, ctx) for s in test]
        timings["predict_s"] = time.perf_counter() - start
        if on_trained is not None:
            on_trained(lambda sample, _key: self.predict(model, sample.image, test.num_classes, ctx))
        params = sum(p.numel() for p in model.parameters())
        scale = scale_record(ctx.spec.dataset, ctx.spec.root, self.cfg.max_side,
                             [s.semantic.shape for s in test], self.cfg.input_size)
        extra: dict[str, Any] = {"n_fit": len(fit), "n_val": len(val), "params": params, "working_scale": scale}
        if official:
            extra["official_loop"] = dataclasses.asdict(train_loop(ctx.spec.dataset, self.cfg.batch))
        return RunOutput(predictions, timings, extra)

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in [0, 1] as the network takes it (`normalize`)."""
        return imagenet_normalise(x) if self.cfg.normalize == "imagenet" else x

    def working_size(self, hw: tuple[int, int], ctx: RunContext) -> tuple[int, int]:
        """The size an image is trained on and predicted at (the fixed input, else the working size)."""
        if self.cfg.input_size:
            return self.cfg.input_size, self.cfg.input_size
        return target_size(hw, self.cfg.max_side, spec_floor(ctx.spec))

    def _working(self, sample: Sample, ctx: RunContext) -> tuple[torch.Tensor, np.ndarray]:
        size = self.working_size(sample.image.shape[:2], ctx)
        return resize_image(to_tensor(sample.image), size)[0], np.array(resize_labels(sample.semantic, size))

    @retained_memory()  # each step's big temporaries reuse the blocks the step before freed
    def train(self, fit: list[Sample], val: list[Sample], num_classes: int, ignore: int,
              ctx: RunContext) -> nn.Module:
        cfg = self.cfg
        gen, model, data, loss_fn, opt = self._setup(fit, num_classes, ignore, ctx)
        sched = build_scheduler(cfg, opt)
        kept = _Best(copy.deepcopy(model.state_dict()))
        history = History(SETTINGS.max_points)
        resume = loop_state({"model": model, "opt": opt, "sched": sched, "best": kept, "history": history},
                            gen, cfg.max_epochs)  # saved after an epoch inside RunContext.run_checkpoint
        stage = StageLog(f"{self.name} train", cfg.max_epochs, ctx.progress, unit="epoch", initial=resume.start,
                         history=history)  # history: the record's
        for epoch in range(resume.start, cfg.max_epochs):
            if val and kept.stale >= cfg.patience:  # the checkpoint ends with the early stop
                break
            model.train()
            losses = []
            STEPS.start("train")
            for indices in epoch_batches(cfg, len(data), gen, self.drop_last):
                losses.append(self._step(model, opt, loss_fn, self._batch(data, gen, indices), ctx))
                STEPS.tick("train")
            if sched is not None:
                sched.step()
            train_loss = float(torch.stack(losses).mean()) if losses else math.nan
            if not val:
                stage.update(epoch + 1, loss=train_loss)
                kept.state = copy.deepcopy(model.state_dict())
                resume.step_done(epoch + 1)
                continue
            STEPS.start("validate")
            score = self.validate(model, val, num_classes, ctx)
            STEPS.tick("validate")
            stage.update(epoch + 1, loss=train_loss, val_dice=score)
            kept.update(score, model)
            resume.step_done(epoch + 1)
        stage.close()
        model.load_state_dict(kept.state)
        return model.eval()

    @retained_memory()
    def train_official(self, fit: list[Sample], num_classes: int, ignore: int, ctx: RunContext) -> nn.Module:
        """The official loop (zx-pan/mdm train_unet.py, REFERENCE §8): one shuffled pass of
        random crops an epoch, no validation; at each epoch's last batch, once the iterations
        exceed the data set's start (bench.official), that batch's loss drives the stop. The
        network at the stop is kept."""
        cfg, loop = self.cfg, train_loop(ctx.spec.dataset, self.cfg.batch)
        batch_cfg = dataclasses.replace(cfg, batch=loop.batch or cfg.batch)
        gen, model, data, loss_fn, opt = self._setup(fit, num_classes, ignore, ctx)
        stop = LastBatchStop(loop.start_iteration, loop.max_break)
        history = History(SETTINGS.max_points)
        resume = loop_state({"model": model, "opt": opt, "stop": stop, "history": history}, gen, loop.max_epochs)
        stage = StageLog(f"{self.name} train", loop.max_epochs, ctx.progress, unit="epoch", initial=resume.start,
                         history=history)
        iterations = resume.start * len(epoch_batches(batch_cfg, len(data), torch.Generator(), self.drop_last))
        for epoch in range(resume.start, loop.max_epochs):
            if stop.stopped:  # the checkpoint ends with the stop
                break
            model.train()
            last = torch.zeros(())
            STEPS.start("train")
            for indices in epoch_batches(batch_cfg, len(data), gen, self.drop_last):
                last = self._step(model, opt, loss_fn, self._batch(data, gen, indices), ctx)
                iterations += 1
                STEPS.tick("train")
            value = float(last)  # the epoch's one host sync
            stage.update(epoch + 1, loss=value)
            stop.check(iterations, value)
            resume.step_done(epoch + 1)
        stage.close()
        return model.eval()

    def _setup(self, fit: list[Sample], num_classes: int, ignore: int, ctx: RunContext) -> tuple[
            torch.Generator, nn.Module, list[tuple[torch.Tensor, np.ndarray]], Callable[..., torch.Tensor],
            torch.optim.Optimizer]:
        """What both loops start from, seeded by the run: its generator, the network on the device,
        the working-size images, the loss and the optimiser."""
        torch_gen = torch.Generator().manual_seed(ctx.spec.seed)
        torch.manual_seed(ctx.spec.seed)
        model = to_device(self.build_model(num_classes), ctx.device)
        data = [self._working(s, ctx) for s in fit]
        loss_fn = build_loss(self.cfg.loss, num_classes, ignore)
        return torch_gen, model, data, loss_fn, build_optimizer(self.cfg, model.parameters())

    def _step(self, model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor],
              batch: tuple[torch.Tensor, torch.Tensor], ctx: RunContext) -> torch.Tensor:
        """One optimiser step on a training batch; its loss, detached (on the device: no sync)."""
        x, y = batch
        with autocast(ctx.device):
            logits = model(self.network_input(prepare_batch(x, ctx.device)))
        loss = loss_fn(logits.float(), y.to(ctx.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def _batch(self, data: list[tuple[torch.Tensor, np.ndarray]], gen: torch.Generator,
               indices: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch of `indices`, or (None) of `cfg.batch` images drawn at random."""
        xs, ys = [], []
        for i in range(self.cfg.batch if indices is None else len(indices)):
            index = int(torch.randint(len(data), (1,), generator=gen)) if indices is None else indices[i]
            image, labels = data[index]
            x, y = image, torch.from_numpy(labels)
            if not self.cfg.input_size:
                x, y = random_crop(x, y, self.cfg.crop, gen)
            x, y = augment(x, y, self.cfg.augment, gen, self.cfg.rotate_degrees)
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)[:, None]

    @torch.no_grad()
    def validate(self, model: nn.Module, val: list[Sample], num_classes: int, ctx: RunContext) -> float:
        """Mean foreground Dice (binary) or mean per-class Dice over the validation images."""
        scores = []
        for sample in val:
            pred = self.predict(model, sample.image, num_classes, ctx)
            gt = sample.semantic
            classes = range(1, num_classes)
            dices = [2 * np.sum((pred == c) & (gt == c)) / max(1, np.sum(pred == c) + np.sum(gt == c))
                     for c in classes]
            scores.append(float(np.mean(dices)))
        model.eval()
        return float(np.mean(scores))

    @torch.no_grad()
    def predict(self, model: nn.Module, image: np.ndarray, num_classes: int, ctx: RunContext) -> np.ndarray:
        model.eval()

        def forward(batch: torch.Tensor, _positions: object = None) -> torch.Tensor:
            with autocast(ctx.device):
                logits = model(self.network_input(prepare_batch(batch, ctx.device)))
            return scores_from_logits(logits.float(), num_classes).cpu()

        x = resize_image(to_tensor(image), self.working_size(image.shape[:2], ctx))
        if self.cfg.input_size:
            scores = forward(x)
        else:
            scores = sliding_window_predict(x, self.cfg.crop, self.cfg.overlap, self.cfg.batch, forward)
        return scores_to_labels(scores[0], image.shape[:2])


class _Best:
    """Early stopping's state: the best validation Dice, its weights and the epochs since."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.score, self.state, self.stale = -math.inf, state, 0

    def update(self, score: float, model: nn.Module) -> None:
        if score > self.score:
            self.score, self.state, self.stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            self.stale += 1

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "state": self.state, "stale": self.stale}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.score, self.stale = float(saved["score"]), int(saved["stale"])
        self.state = {k: v.to(self.state[k].device) for k, v in saved["state"].items()}


def build_optimizer(cfg: SupervisedConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: SupervisedConfig, opt: torch.optim.Optimizer) -> LRScheduler | None:
    """The learning-rate schedule, stepped once per epoch (as UCTransNet's official loop does)."""
    if cfg.scheduler == "cosine_warm_restarts":
        return CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_period, eta_min=cfg.min_lr)
    return None


def epoch_batches(cfg: SupervisedConfig, n: int, gen: torch.Generator,
                  drop_last: bool = False) -> list[list[int] | None]:
    """One epoch's batches: `pass` splits a shuffled order of the n images into batches (the
    last may be smaller, or be dropped with `drop_last`), as the published recipes' data loaders do; `steps` gives
    steps_per_epoch entries of None, each a batch whose images are drawn at random."""
    if cfg.epoch_mode == "pass":
        chunks = [chunk.tolist() for chunk in torch.randperm(n, generator=gen).split(cfg.batch)]
        if drop_last and len(chunks) > 1 and len(chunks[-1]) < cfg.batch:
            chunks.pop()
        return chunks
    if cfg.epoch_mode == "steps":
        return [None] * cfg.steps_per_epoch
    raise ValueError(f"unknown epoch_mode {cfg.epoch_mode!r}; expected steps or pass")


def split_validation(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Carve a validation set from the labelled images, deterministic by seed (none if only one image)."""
    if len(samples) < 2 or fraction <= 0:
        return samples, []
    n_val = min(len(samples) - 1, max(1, round(len(samples) * fraction)))
    order = np.random.default_rng(seed).permutation(len(samples))
    val = set(order[:n_val].tolist())
    return [s for i, s in enumerate(samples) if i not in val], [s for i, s in enumerate(samples) if i in val]


def random_crop(x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random size x size crop; images smaller than that are zero-padded (labels with 0)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h))
        y = torch.nn.functional.pad(y, (0, pad_w, 0, pad_h))
        h, w = x.shape[-2:]
    top = int(torch.randint(h - size + 1, (1,), generator=gen))
    left = int(torch.randint(w - size + 1, (1,), generator=gen))
    return x[..., top : top + size, left : left + size], y[top : top + size, left : left + size]


def augment(x: torch.Tensor, y: torch.Tensor, kind: str, gen: torch.Generator,
            degrees: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "none":
        return x, y
    if kind == "rot_flip_or_rotate":
        return rot_flip_or_rotate(x, y, degrees, gen)
    if torch.rand((), generator=gen) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if kind == "flip_rot90":
        if torch.rand((), generator=gen) < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        if x.shape[-1] == x.shape[-2]:
            k = int(torch.randint(4, (1,), generator=gen))
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    return x, y


def rot_flip_or_rotate(x: torch.Tensor, y: torch.Tensor, degrees: float,
                       gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """UCTransNet's augmentation: half the time a random rot90 plus a flip along a random axis,
    else half the time a rotation by an angle uniform in [-degrees, degrees], else nothing."""
    if torch.rand((), generator=gen) < 0.5:
        if x.shape[-1] == x.shape[-2]:
            k = int(torch.randint(4, (1,), generator=gen))
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        axis = -1 - int(torch.randint(2, (1,), generator=gen))
        return x.flip(axis), y.flip(axis)
    if torch.rand((), generator=gen) < 0.5:
        angle = float(torch.rand((), generator=gen) * 2 - 1) * degrees
        return rotate(x, y, angle)
    return x, y


def rotate(x: torch.Tensor, y: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate a C x H x W image (bilinear) and its H x W labels (nearest) by `angle` degrees
    about the centre, same size; pixels rotated in from outside are 0 (background)."""
    h, w = x.shape[-2:]
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # A rigid rotation in pixel units, written in affine_grid's [-1, 1] coordinates.
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    xr = F.grid_sample(x[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    yr = F.grid_sample(y[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return xr.to(x.dtype), yr[0, 0].round().to(y.dtype)
