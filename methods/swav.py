"""SwAV (Caron et al.): swapped-prediction pre-training of a ResNet-50 (and its 2x-wide variant).

Pixel features are the inputs of every second bottleneck of layer1-4 (REFERENCE §5): blocks 0, 2
of layer1, 0, 2 of layer2, 0, 2, 4 of layer3 and 0, 2 of layer4, i.e. 64 + 256 + 256 + 512 + 512
+ 1024 + 1024 + 1024 + 2048 = 6,720 channels for ResNet-50 and twice that (13,440) for RN50w2.
(The blocks' outputs would give 8,704, every block's input 13,120: only this choice gives 6,720.)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn

from bench.context import RunContext
from bench.distributed import layout, unwrap
from bench.errors import FieldError
from bench.limits import FRACTION, NON_NEGATIVE, POSITIVE, Rule, non_negative
from bench.nn.imagenet import imagenet_normalise
from bench.nn.multicrop import CropSpec, Distortion, multi_crop
from bench.nn.swav_loss import EmbeddingQueue, swapped_prediction_loss
from bench.nn.swav_resnet import SwAVNet, block_inputs, resnet_trunk
from bench.pretrain import PretrainSchedule, pretrain
from bench.registry import register
from bench.ssl import SMALL_PROBE, TINY_PROBE, SSLConfig, SSLMethod


@dataclass(frozen=True)
class SwAVConfig(SSLConfig):
    """SwAV's published recipe (2x224 + 6x96 crops, 3000 prototypes, eps 0.05, 3 Sinkhorn steps).

    The optimiser is the harness's shared AdamW loop (SwAV used LARS at batch 4096); the step
    counts of the queue and of the prototype freeze are SwAV's small-batch settings in steps.
    """

    width: int = 64                     # stem / layer1 width: 64 = ResNet-50, 128 = RN50w2
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)  # the four stages' bottleneck counts
    read_every: int = 2                 # features: inputs of blocks 0, 2, 4, ... of each stage
    hidden_mlp: int = 2048
    out_dim: int = 128
    prototypes: int = 3000
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iters: int = 3
    base_crop: int = 256                # region cut from the pool each step; crops are taken from it
    global_crops: int = 2
    global_size: int = 224
    global_scale: tuple[float, float] = (0.14, 1.0)
    local_crops: int = 6
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.14)
    color_strength: float = 1.0
    queue_length: int = 3840            # 0 = no queue
    queue_start: int = 1000             # steps before the queue is filled and used
    freeze_prototypes_steps: int = 313
    train_steps: int = 10000
    train_batch: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-6

    LIMITS: ClassVar[dict[str, Rule]] = {
        "width": POSITIVE, "layers": POSITIVE, "read_every": POSITIVE, "hidden_mlp": POSITIVE,
        "out_dim": POSITIVE, "prototypes": POSITIVE, "temperature": POSITIVE, "epsilon": POSITIVE,
        "sinkhorn_iters": POSITIVE, "base_crop": POSITIVE, "global_crops": POSITIVE, "global_size": POSITIVE,
        "global_scale": FRACTION, "local_crops": NON_NEGATIVE, "local_size": POSITIVE, "local_scale": FRACTION,
        "color_strength": NON_NEGATIVE, "queue_length": non_negative(note="0: no queue"),
        "queue_start": NON_NEGATIVE, "freeze_prototypes_steps": NON_NEGATIVE,
        "train_steps": non_negative(note="0: the untrained backbone"), "train_batch": POSITIVE, "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        """Fail at config time on settings SwAV cannot honour."""
        super().__post_init__()
        if self.global_crops + self.local_crops < 2:
            raise FieldError("global_crops", "need at least 1 global crop and 2 crops in all (codes are swapped)")
        for key in ("global_scale", "local_scale"):
            low, high = getattr(self, key)
            if low > high:
                raise FieldError(key, f"the smallest scale comes first, got {[low, high]}")
        if self.queue_length and self.queue_length < self.train_batch:
            raise FieldError("queue_length", f"0 (no queue) or at least train_batch ({self.train_batch})")


class SwAVStep:
    """The per-step loss and its embedding queue.

    The step count lives in the model (`SwAVNet.steps`), so a resumed pre-training keeps the
    prototype freeze and queue start where they were; the queue itself is not checkpointed and
    simply refills (queue_length / batch steps) after a resume. Data parallel, each process queues
    its own embeddings (queue_length / processes of them, as the reference does) and Sinkhorn
    all-reduces its sums, so the codes cover the global batch and queue. BatchNorm is synchronised
    on GPUs only (SyncBatchNorm has no CPU kernel): on CPUs its statistics are per process.
    """

    unused_parameters = True  # the prototypes get no gradient while frozen (DDP must know)

    def __init__(self, cfg: SwAVConfig) -> None:
        self.cfg = cfg
        self.queue: EmbeddingQueue | None = None
        specs = (CropSpec(cfg.global_crops, cfg.global_size, cfg.global_scale),
                 CropSpec(cfg.local_crops, cfg.local_size, cfg.local_scale))
        self.specs: tuple[CropSpec, ...] = tuple(s for s in specs if s.count)
        self.distortion = Distortion(strength=cfg.color_strength)

    def __call__(self, model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        net = cast(SwAVNet, unwrap(model))  # the SwAVNet itself (model may be its DDP wrapper)
        c, b, step = self.cfg, x.shape[0], int(net.steps)
        net.steps += 1
        net.normalise_prototypes()
        crops = [imagenet_normalise(g) for g in multi_crop((x + 1) / 2, self.specs, self.distortion, gen)]
        embeddings, scores = model(crops, frozen=step < c.freeze_prototypes_steps)
        scores = list(scores.split(b))
        queued = self._queued(net, embeddings, b, x.device) if c.queue_length and step >= c.queue_start else None
        return swapped_prediction_loss(scores, c.global_crops, c.temperature, c.epsilon, c.sinkhorn_iters, queued)

    def _queued(self, model: SwAVNet, embeddings: torch.Tensor, b: int, device: torch.device
                ) -> list[torch.Tensor | None]:
        """Scores of the queued embeddings (once the queue is full), then this batch joins it."""
        c = self.cfg
        if self.queue is None:
            self.queue = EmbeddingQueue(c.global_crops, c.queue_length // layout().world, c.out_dim, device)
        queue = self.queue
        weight = model.prototypes.weight.detach().float()
        out = [queue.store[i] @ weight.t() if queue.full else None for i in range(c.global_crops)]
        for i in range(c.global_crops):
            queue.push(i, embeddings[i * b : (i + 1) * b].detach())
        return out


@register("swav", "ssl")
class SwAV(SSLMethod):
    """SwAV pixel features: inputs of every second bottleneck of a swapped-prediction ResNet-50."""

    Config = SwAVConfig
    # `window` too: pre-training crops `base_crop`-px regions, the window is only the probe's.
    probe_only_fields = ("read_every", "window")
    presets = {
        "tiny": SwAVConfig(
            **TINY_PROBE, width=4, layers=(1, 1, 1, 1), hidden_mlp=64,
            out_dim=32, prototypes=16, base_crop=64, global_size=48, global_scale=(0.3, 1.0),
            local_crops=2, local_size=24, local_scale=(0.1, 0.3), queue_length=32, queue_start=20,
            freeze_prototypes_steps=10, train_steps=40, train_batch=8, lr=1e-3,
        ),
        "small": SwAVConfig(
            **SMALL_PROBE, width=16, layers=(2, 2, 2, 2), hidden_mlp=256,
            out_dim=64, prototypes=100, base_crop=128, global_size=96, global_scale=(0.3, 1.0),
            local_crops=4, local_size=48, local_scale=(0.1, 0.3), queue_length=128, queue_start=300,
            freeze_prototypes_steps=100, train_steps=1000, train_batch=16, lr=1e-3,
        ),
        "paper": SwAVConfig(protocol="official"),
    }

    def build_model(self, num_classes: int = 2) -> SwAVNet:
        c = self.cfg
        return SwAVNet(resnet_trunk(c.width, c.layers), c.hidden_mlp, c.out_dim, c.prototypes)

    def schedules(self) -> dict[str, PretrainSchedule]:
        c = self.cfg
        return {f"{self.name} pretrain": PretrainSchedule(steps=c.train_steps, batch=c.train_batch,
                                                          crop=c.base_crop, lr=c.lr,
                                                          weight_decay=c.weight_decay, max_side=c.max_side)}

    def pretrain(self, images: list[np.ndarray], ctx: RunContext) -> dict[str, Any]:
        ((desc, sched),) = self.schedules().items()
        return pretrain(self.build_model(), images, sched, SwAVStep(self.cfg), ctx.device, self.cfg.pretrain_seed,
                        ctx.progress, desc=desc)

    def extract(self, backbone: nn.Module, x: torch.Tensor, domain: str) -> list[torch.Tensor]:
        return block_inputs(cast(SwAVNet, backbone).trunk, imagenet_normalise(x), self.cfg.read_every)


def _doubled(cfg: SwAVConfig) -> SwAVConfig:
    return dataclasses.replace(cfg, width=2 * cfg.width)


@register("swavw2", "ssl")
class SwAVW2(SwAV):
    """SwAVw2 pixel features: SwAV's RN50w2 (every ResNet-50 width doubled, stem included)."""

    presets = {name: _doubled(cfg) for name, cfg in SwAV.presets.items()}
