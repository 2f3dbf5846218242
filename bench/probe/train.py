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
from bench.probe.bank import FeatureBank, Staged
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
    """Per-member best loss, non-improvement count and whether the member still trains.

    The tensors live on the training device and are updated there; `host_active` is the host's
    copy of `active`, refreshed once per epoch (`finish_epoch`), and `live` a pinned host mirror
    of "some member still trains" that the device writes each step without the host waiting.
    """

    def __init__(self, members: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.best = torch.full((members,), math.inf, device=self.device)
        self.count = torch.zeros(members, dtype=torch.int64, device=self.device)
        self.active = torch.ones(members, dtype=torch.bool, device=self.device)
        self.host_active = [True] * members
        self._live = torch.ones(1, dtype=torch.bool, pin_memory=self.device.type == "cuda")
        self._live_view = self._live.numpy()  # read without a torch call, as the copy stands

    def update(self, loss: Tensor, limit: int, inclusive: bool) -> Tensor:
        """Record one loss per member; return the members that stop now (on the device)."""
        improved = loss < self.best
        self.best = torch.where(improved, loss, self.best)
        self.count = torch.where(improved, torch.zeros_like(self.count), self.count + 1)
        over = self.count >= limit if inclusive else self.count > limit
        newly = self.active & over
        self.active &= ~newly
        return newly

    def in_span(self) -> Tensor:
        """Mask of the members between the first and the last active one (on the device)."""
        before = self.active.cumsum(0) > 0
        after = self.active.flip(0).cumsum(0).flip(0) > 0
        return before & after

    def span(self) -> slice:
        """The smallest contiguous range of members holding every active one (asks the device)."""
        idx = self.active.nonzero().flatten()
        return slice(int(idx[0]), int(idx[-1]) + 1) if idx.numel() else slice(0, 0)

    def host_span(self) -> slice:
        """`span` from the host's copy of `active`."""
        idx = [k for k, on in enumerate(self.host_active) if on]
        return slice(idx[0], idx[-1] + 1) if idx else slice(0, 0)

    def post_live(self) -> None:
        """Queue the copy of "some member still trains" to the host mirror (no waiting)."""
        self._live.copy_(self.active.any().view(1), non_blocking=True)

    def all_stopped(self) -> bool:
        """Whether the host mirror already says every member stopped. It may lag the device by
        the steps still queued, never the other way: a stopped member never trains again."""
        return not bool(self._live_view[0])

    def finish_epoch(self, mean: Tensor) -> Tensor:
        """The epoch's one host synchronisation: its per-member mean losses and, into
        `host_active`, which members still train. Returns the losses on the host."""
        payload = torch.cat([mean, self.active.to(mean.dtype)]).cpu()
        self.host_active = (payload[mean.numel():] > 0).tolist()
        self._live.fill_(any(self.host_active))
        return payload[:mean.numel()]

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best.clone(), "count": self.count.clone(), "active": self.active.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.host_active = [bool(v) for v in state["active"].cpu().tolist()]
        self._live.fill_(any(self.host_active))
        self.best, self.count, self.active = (state[k].to(self.device)
                                              for k in ("best", "count", "active"))


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


def _member_batches(bank: FeatureBank, streams: PixelStreams, span: slice, cfg: ProbeConfig
                    ) -> Iterator[tuple[slice, Tensor, Tensor, bool]]:
    """Each step's member groups in turn: (group, features, labels, last group of its step).

    Members are processed in groups whose float32 features fit `step_bytes`. A group's batch is
    staged (`FeatureBank.stage`) while the one before it is computed on, so a bank on the host
    picks and copies its rows for the GPU while the GPU works.
    """
    def units() -> Iterator[tuple[int, slice, bool]]:
        for step in range(streams.steps):
            per_group = max(1, cfg.step_bytes // (streams.batch_size(step) * bank.dim * 4))
            for group in _groups(span, per_group):
                yield step, group, group.stop == span.stop

    pending: tuple[slice, bool, Staged] | None = None
    for step, group, last in units():
        staged = bank.stage(streams.batch_pixels(step, group))
        if pending is not None:
            yield (pending[0], *bank.take(pending[2]), pending[1])
        pending = (group, last, staged)
    if pending is not None:
        yield (pending[0], *bank.take(pending[2]), pending[1])


def _steps(model: EnsembleMLP, opt: torch.optim.Optimizer, bank: FeatureBank,
           streams: PixelStreams, span: slice, cfg: ProbeConfig, device: torch.device
           ) -> Iterator[Tensor]:
    """The epoch's optimisation steps of the members in `span`; after each, the per-member mean
    losses (K,) on the device, inf outside `span`. Nothing here waits on the device."""
    losses: Tensor | None = None
    for group, feats, labels, last in _member_batches(bank, streams, span, cfg):
        if losses is None:
            opt.zero_grad(set_to_none=True)
            losses = torch.full((cfg.ensemble,), math.inf, device=device)
        losses[group] = accumulate_grads(model, feats, labels, group)
        if last:
            opt.step()
            yield losses
            losses = None


def _kept(model: EnsembleMLP, final: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(live, kept) pairs of every state tensor. The live ones are views of the parameters and
    buffers, which training and loading update in place, so the pairs stay valid."""
    return [(tensor, final[name]) for name, tensor in model.state_dict().items()]


@torch.no_grad()
def _snapshot(pairs: list[tuple[Tensor, Tensor]], members: Tensor) -> None:
    """Keep `members`' (a device mask) current state: each live tensor of `_kept` pairs into its
    kept one, without the host asking which members."""
    masks: dict[int, Tensor] = {}
    for live, kept in pairs:
        mask = masks.setdefault(live.dim(), members.view(-1, *([1] * (live.dim() - 1))))
        torch.where(mask, live, kept, out=kept)


def _working_bytes(cfg: ProbeConfig, dim: int, num_classes: int) -> int:
    """Device memory training needs beside the bank: parameters, gradients, Adam's two moments
    and the kept weights, two member groups' features in flight (the one computed on and the
    one staged) and activations."""
    sizes = [dim, *cfg.hidden_sizes(num_classes), num_classes]
    params = cfg.ensemble * sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    activations = cfg.ensemble * cfg.batch_pixels * sum(sizes[1:]) * 4 * 4
    return 5 * params * 4 + 2 * cfg.step_bytes + activations


def train_probe(bank: FeatureBank, num_classes: int, cfg: ProbeConfig | None = None,
                seed: int = 0, ignore_index: int = 255, device: str | torch.device = "cpu",
                progress: bool = False) -> EnsembleMLP:
    """Train the probe ensemble on every labelled pixel of `bank`; returns it in eval mode.

    Each member draws its initial weights and its epoch orders from its own generator, all
    derived from `seed`, so members differ as the reference's separately trained models did,
    and a member's training does not depend on the others. Deterministic for a seed on CPU.

    Everything runs on `device`: the bank moves there first (`FeatureBank.to`: into GPU memory
    when it fits beside the training's working set, else pinned host memory), batches are
    gathered there, and the stopping rule's bookkeeping stays there, read by the host once per
    epoch. Steps within an epoch never wait on the device.
    """
    cfg = cfg or ProbeConfig()
    device = torch.device(device)
    bank.to(device, reserve_bytes=_working_bytes(cfg, bank.dim, num_classes))
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
    stop = _EarlyStop(cfg.ensemble, device)
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
            if not any(stop.host_active):  # every member stopped in the epoch the checkpoint ends
                break
            loss = _run_epoch(model, opt, bank, streams, stop, final, cfg, epoch, device)
            stage.update(epoch + 1, loss=loss, active=sum(stop.host_active))
            resume.step_done(epoch + 1)
    _snapshot(_kept(model, final), stop.active)  # members that ran out of epochs
    model.load_state_dict(final)
    return model.eval()


def _run_epoch(model: EnsembleMLP, opt: torch.optim.Optimizer, bank: FeatureBank,
               streams: PixelStreams, stop: _EarlyStop, final: dict[str, Tensor],
               cfg: ProbeConfig, epoch: int, device: torch.device) -> float:
    """One epoch of every active member; returns their mean training loss (for progress).

    The members trained are those between the first and the last active one when the epoch
    starts (what the host knows). Under the natural rule a member may stop at any step; it then
    keeps the weights it had (snapshotted on the device), and its losses count as they would
    had it left the range trained (inf once outside it), so the epoch's reported loss and every
    result equal those of a loop that asked the device after each step. When the host mirror
    says all members stopped, the epoch ends (a few steps late on a GPU, changing nothing).
    """
    streams.start_epoch()
    span = stop.host_span()
    per_step = cfg.stop_rule == "natural" and epoch > cfg.warmup_epochs
    totals = torch.zeros(cfg.ensemble, device=device)
    left = torch.zeros(cfg.ensemble, dtype=torch.bool, device=device)  # ever outside the range
    pairs = _kept(model, final)
    for losses in _steps(model, opt, bank, streams, span, cfg, device):
        STEPS.tick("probe")
        if not per_step:
            totals += losses
            continue
        inside, live = stop.in_span(), stop.active.any()
        totals += torch.where(inside, losses, 0.0)
        left |= ~inside & live
        newly = stop.update(torch.where(inside, losses, math.inf), cfg.patience_iters, inclusive=False)
        _snapshot(pairs, newly)
        stop.post_live()
        if stop.all_stopped():
            break
    mean = torch.where(left, math.inf, totals / streams.steps)
    if cfg.stop_rule == "loss_plateau":
        _snapshot(pairs, stop.update(mean, cfg.patience, inclusive=True))
    host = stop.finish_epoch(mean)
    trained = host.isfinite()
    return float(host[trained].mean()) if bool(trained.any()) else math.nan
