"""Training the pixel probe shared by every SSL method (REFERENCE §6).

Features come from a `FeatureBank` (native-size float16 maps, interpolated per batch), the
ensemble is one batched `EnsembleMLP`, and prediction (bench.probe.predict) runs the first layer
at the maps' native resolution and upsamples its outputs, so neither training nor inference ever
holds a data set's (or one image's) full-resolution features.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import ConfigError
from bench.probe.bank import FeatureBank
from bench.probe.mlp import EnsembleMLP
from bench.probe.sampler import PixelStreams, member_generators
from bench.progress import SETTINGS, History, StageLog
from bench.resume import loop_state
from bench.steptime import STEPS

StopRule = Literal["natural", "loss_plateau"]
_WHERE = "[probe]"


@dataclass(frozen=True)
class ProbeConfig:
    """Every number of the probe protocol. Defaults are the natural-image (FFHQ/CelebA) setting.

    stop_rule "natural" (ddpm-segmentation): at most `max_epochs` epochs; from epoch index
    `warmup_epochs` + 1 on, a member stops once more than `patience_iters` consecutive batch
    losses failed to beat its best. "loss_plateau" (MDM medical): a member stops once its epoch
    mean training loss has not decreased for `patience` epochs (`max_epochs` None = no cap).
    A stopped member keeps the weights it had when it stopped, as each reference model did.
    `step_bytes` caps the float32 features gathered per step (members are processed in groups
    that fit); `order_bytes` caps materialised per-member epoch orders.
    """

    ensemble: int = 10
    lr: float = 1e-3
    batch_pixels: int = 64
    stop_rule: StopRule = "natural"
    max_epochs: int | None = 100
    patience: int = 20
    patience_iters: int = 50
    warmup_epochs: int = 3
    hidden: tuple[int, ...] | None = None
    narrow_hidden: tuple[int, ...] = (128, 32)
    wide_hidden: tuple[int, ...] = (256, 128)
    wide_from_classes: int = 30
    pixels_per_epoch: int | None = None
    init_std: float = 0.02
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    step_bytes: int = 256 * 2**20
    order_bytes: int = 256 * 2**20

    def __post_init__(self) -> None:
        positive = ("ensemble", "lr", "batch_pixels", "patience", "patience_iters", "init_std",
                    "bn_eps", "step_bytes")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ConfigError(_WHERE, key, f"must be positive, got {getattr(self, key)}")
        if self.batch_pixels < 2:
            raise ConfigError(_WHERE, "batch_pixels", "batch normalisation needs at least 2")
        if self.stop_rule not in ("natural", "loss_plateau"):
            raise ConfigError(_WHERE, "stop_rule",
                              f"must be 'natural' or 'loss_plateau', got {self.stop_rule!r}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ConfigError(_WHERE, "max_epochs", f"must be at least 1, got {self.max_epochs}")
        if self.stop_rule == "natural" and self.max_epochs is None:
            raise ConfigError(_WHERE, "max_epochs", "the natural rule needs an epoch cap")
        if self.pixels_per_epoch is not None and self.pixels_per_epoch < 2:
            raise ConfigError(_WHERE, "pixels_per_epoch", "must be at least 2 (or unset)")
        if self.hidden is not None and (not self.hidden or min(self.hidden) < 1):
            raise ConfigError(_WHERE, "hidden", f"needs positive layer widths, got {self.hidden}")

    @classmethod
    def natural(cls, **overrides: object) -> ProbeConfig:
        """ddpm-segmentation: 64-pixel batches, <= 100 epochs, 50-iteration patience."""
        return cls(**overrides)  # type: ignore[arg-type]

    @classmethod
    def medical(cls, **overrides: object) -> ProbeConfig:
        """MDM medical: 65,536-pixel batches until the epoch loss plateaus for 20 epochs."""
        settings: dict[str, object] = dict(batch_pixels=65_536, stop_rule="loss_plateau",
                                           max_epochs=None, patience=20)
        return cls(**{**settings, **overrides})  # type: ignore[arg-type]

    def hidden_sizes(self, num_classes: int) -> tuple[int, ...]:
        """d-128-32-C below `wide_from_classes` classes, d-256-128-C from there (REFERENCE §6)."""
        if self.hidden is not None:
            return tuple(self.hidden)
        return self.narrow_hidden if num_classes < self.wide_from_classes else self.wide_hidden


class _EarlyStop:
    """Per-member best loss, non-improvement count and whether the member still trains."""

    def __init__(self, members: int) -> None:
        self.best = torch.full((members,), math.inf)
        self.count = torch.zeros(members, dtype=torch.int64)
        self.active = torch.ones(members, dtype=torch.bool)

    def update(self, loss: Tensor, limit: int, inclusive: bool) -> Tensor:
        """Record one loss per member; return the members that stop now."""
        improved = loss < self.best
        self.best = torch.where(improved, loss, self.best)
        self.count = torch.where(improved, torch.zeros_like(self.count), self.count + 1)
        over = self.count >= limit if inclusive else self.count > limit
        newly = self.active & over
        self.active &= ~newly
        return newly

    def span(self) -> slice:
        """The smallest contiguous range of members holding every active one."""
        idx = self.active.nonzero().flatten()
        return slice(int(idx[0]), int(idx[-1]) + 1) if idx.numel() else slice(0, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best.clone(), "count": self.count.clone(), "active": self.active.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.count, self.active = state["best"], state["count"], state["active"]


class _Resumed:
    """The rest of the probe's loop state as one checkpoint part: each member's generator (its
    epoch orders) and the kept weights of members that stopped (`final`)."""

    def __init__(self, gens: list[torch.Generator], final: dict[str, Tensor]) -> None:
        self.gens, self.final = gens, final

    def state_dict(self) -> dict[str, Any]:
        return {"gens": [g.get_state() for g in self.gens], "final": self.final}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, saved in zip(self.gens, state["gens"]):
            g.set_state(saved)
        for name, tensor in self.final.items():
            tensor.copy_(state["final"][name])


def accumulate_grads(model: EnsembleMLP, feats: Tensor, labels: Tensor,
                     members: slice | None = None) -> Tensor:
    """Forward and backward of members' own batches; returns each member's mean CE loss.

    The summed loss separates over members, so each member's gradient is that of its own loss.
    Adam then acts elementwise on the stacked parameters, with one shared step count, which is
    exactly K independent Adam optimisers stepping together.
    """
    logits = model(feats, members=members)
    k, n, c = logits.shape
    loss = F.cross_entropy(logits.reshape(k * n, c), labels.reshape(-1), reduction="none")
    per_member = loss.view(k, n).mean(dim=1)
    per_member.sum().backward()
    return per_member.detach()


def make_optimizer(model: EnsembleMLP, cfg: ProbeConfig) -> torch.optim.Adam:
    """Adam over the stacked parameters, fused into one kernel per step where torch has one.

    Adam is elementwise, so on stacked parameters it is K per-member Adams (see
    `accumulate_grads`); fusing only removes per-tensor passes (10x faster steps on CPU for
    the 8448-d FFHQ probe), with results equal up to float rounding.
    """
    fused = model.weights[0].device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused)


def _groups(span: slice, per_group: int) -> Iterator[slice]:
    for lo in range(span.start, span.stop, per_group):
        yield slice(lo, min(span.stop, lo + per_group))


def _train_step(model: EnsembleMLP, opt: torch.optim.Optimizer, bank: FeatureBank, flat: Tensor,
                span: slice, cfg: ProbeConfig, device: torch.device) -> Tensor:
    per_group = max(1, cfg.step_bytes // (flat.shape[1] * bank.dim * 4))
    losses = torch.empty(flat.shape[0])
    opt.zero_grad(set_to_none=True)
    for group in _groups(span, per_group):
        rows = slice(group.start - span.start, group.stop - span.start)
        feats, labels = bank.gather_flat(flat[rows])
        losses[rows] = accumulate_grads(model, feats.to(device), labels.to(device), group).cpu()
    opt.step()
    return losses


@torch.no_grad()
def _snapshot(model: EnsembleMLP, final: dict[str, Tensor], members: Tensor) -> None:
    idx = members.nonzero().flatten().to(next(iter(final.values())).device)
    if idx.numel():
        for name, tensor in model.state_dict().items():
            final[name][idx] = tensor[idx]


def train_probe(bank: FeatureBank, num_classes: int, cfg: ProbeConfig | None = None,
                seed: int = 0, ignore_index: int = 255, device: str | torch.device = "cpu",
                progress: bool = False) -> EnsembleMLP:
    """Train the probe ensemble on every labelled pixel of `bank`; returns it in eval mode.

    Each member draws its initial weights and its epoch orders from its own generator, all
    derived from `seed`, so members differ as the reference's separately trained models did,
    and a member's training does not depend on the others. Deterministic for a seed on CPU.
    """
    cfg = cfg or ProbeConfig()
    device = torch.device(device)
    labelled = bank.labelled_pixels(ignore_index)
    classes = bank.labels_at(labelled)
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(f"labels span {int(classes.min())}..{int(classes.max())} but the probe "
                         f"has {num_classes} classes (is ignore_index={ignore_index} right?)")
    gens = member_generators(seed, cfg.ensemble)
    model = EnsembleMLP(cfg.ensemble, bank.dim, num_classes, cfg.hidden_sizes(num_classes),
                        cfg.init_std, cfg.bn_momentum, cfg.bn_eps, gens).to(device)
    streams = PixelStreams(labelled, gens, cfg.batch_pixels, cfg.pixels_per_epoch,
                           cfg.order_bytes)
    opt = make_optimizer(model, cfg)
    final = {name: t.detach().clone() for name, t in model.state_dict().items()}
    stop = _EarlyStop(cfg.ensemble)
    history = History(SETTINGS.max_points)
    # Inside a run's `resumable` scope (RunContext.run_checkpoint) the state after each epoch
    # is saved every few minutes, and a restarted job continues from it bit for bit (on a CPU).
    resume = loop_state({"model": model, "opt": opt, "stop": stop, "members": _Resumed(gens, final),
                         "history": history}, torch.Generator(), cfg.max_epochs or 0)
    model.train()
    STEPS.start("probe")
    with StageLog("probe", cfg.max_epochs, progress, unit="epoch", initial=resume.start,
                  history=history) as stage:  # its history: the record's
        for epoch in itertools.count(resume.start) if cfg.max_epochs is None else range(resume.start, cfg.max_epochs):
            if not bool(stop.active.any()):  # every member stopped in the epoch the checkpoint ends
                break
            loss = _run_epoch(model, opt, bank, streams, stop, final, cfg, epoch, device)
            stage.update(epoch + 1, loss=loss, active=int(stop.active.sum()))
            resume.step_done(epoch + 1)
    _snapshot(model, final, stop.active)  # members that ran out of epochs
    model.load_state_dict(final)
    return model.eval()


def _run_epoch(model: EnsembleMLP, opt: torch.optim.Optimizer, bank: FeatureBank,
               streams: PixelStreams, stop: _EarlyStop, final: dict[str, Tensor],
               cfg: ProbeConfig, epoch: int, device: torch.device) -> float:
    """One epoch of every active member; returns their mean training loss (for progress)."""
    streams.start_epoch()
    totals = torch.zeros(cfg.ensemble)
    for step in range(streams.steps):
        span = stop.span()
        losses = torch.full((cfg.ensemble,), math.inf)
        losses[span] = _train_step(model, opt, bank, streams.batch_pixels(step, span), span,
                                   cfg, device)
        STEPS.tick("probe")
        totals += losses
        if cfg.stop_rule == "natural" and epoch > cfg.warmup_epochs:
            _snapshot(model, final, stop.update(losses, cfg.patience_iters, inclusive=False))
            if not bool(stop.active.any()):
                break
    mean = totals / streams.steps
    trained = mean.isfinite()
    if cfg.stop_rule == "loss_plateau":
        _snapshot(model, final, stop.update(mean, cfg.patience, inclusive=True))
    return float(mean[trained].mean()) if bool(trained.any()) else math.nan
