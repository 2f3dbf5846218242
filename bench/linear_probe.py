"""Linear probe of a frozen, pre-trained SSL backbone on whole-image classification (CIFAR-10).

The paper's Table 8 (Appendix C) measures how linearly separable a backbone's global features are:
pre-train on the CIFAR-10 train images (32 px), freeze, read the method's own feature blocks at its
own timesteps (the natural-image read-out the segmentation probe uses), average each map over
space, concatenate, and fit one linear layer on the train labels; report top-1 test accuracy.

A run is an ordinary `RunSpec` with `linear_probe` set: the runner, the executors (Slurm's
pre-training jobs and arrays included) and the record are those of every run; `run_linear_probe`
is its body, as `Plugin.run` is a segmentation run's. Pre-training reuses the plugin's `pretrain`
and the harness's artefact cache (`artefact_path`, the path `RunSpec.artefacts` names, so the
artefact is built once per config and shared by every seed; the seed only changes the
classifier's initialisation and batch order). It is pre-trained on the train split only: unlike
the segmentation protocol, the test images are the evaluation here. The backbone is the preset's
own architecture with `window` set to 32 (the paper does not say which CIFAR-10 U-Net it used);
at `paper` that is the 256-px guided-diffusion UNet run at 32 px.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.context import RunContext
from bench.data.cifar10 import CIFAR10, ImageSet, load_cifar10
from bench.device import autocast, prepare_batch
from bench.distributed import build_once
from bench.errors import BenchError, DataError
from bench.plugin import Plugin
from bench.progress import StageLog, add_histories, collect_histories
from bench.protocol import identity as protocol_identity
from bench.provenance import config_hash
from bench.ssl import SSLMethod

FEATURE_DOMAIN = "natural"  # CIFAR-10 is natural images: the methods' natural blocks and timesteps
DATASET = "cifar10"
METRIC = "top1"


@dataclass(frozen=True)
class LinearProbeConfig:
    """The linear classifier and the read-out. The paper does not print these; ours are the
    common linear-evaluation defaults (Adam on standardised features, cosine-decayed lr)."""

    image_size: int = 32                 # backbone input (the plugins' `window`): CIFAR-10's size
    feature_batch: int = 256             # images per forward pass when extracting
    epochs: int = 100
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    standardize: bool = True             # z-score each feature with train statistics
    max_train: int | None = None         # use only the first N train / test images (None = all)
    max_test: int | None = None


LINEAR_PROBE_PRESETS: dict[str, LinearProbeConfig] = {
    "tiny": LinearProbeConfig(feature_batch=64, epochs=30, batch=256, lr=1e-2, max_train=2000, max_test=500),
    "small": LinearProbeConfig(feature_batch=64, epochs=50, batch=256, lr=1e-2, max_train=10000, max_test=2000),
    "paper": LinearProbeConfig(),
}

FEATURE_CACHE_SIZE = 4  # pooled feature sets (method config x split) kept in this process


def backbone_overrides(cfg: LinearProbeConfig) -> dict[str, Any]:
    """Plugin fields the probe must set: the backbone works at the data's native 32 px."""
    return {"window": cfg.image_size}


def artefact_key(plugin: SSLMethod, ctx: RunContext, cfg: LinearProbeConfig) -> str:
    """The harness's artefact key, plus how many train images pre-train it (presets may subsample)."""
    return ctx.artefact_key(plugin.name, {**plugin.pretrain_identity(), "pretrain_images": cfg.max_train})


def artefact_path(plugin: SSLMethod, ctx: RunContext, cfg: LinearProbeConfig) -> Path:
    """Where the backbone is cached: the one path the runner, the schedulers and the run agree on."""
    return ctx.artefact_path(plugin.name, artefact_key(plugin, ctx, cfg))


def first(data: ImageSet, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first n images (the release's batches are already shuffled), or all."""
    stop = len(data) if n is None else min(n, len(data))
    return data.images[:stop], data.labels[:stop]


def check_data(root: str | None) -> None:
    """Load both splits (memoised), so a bad batch fails before anything is written."""
    if root is None:
        raise DataError(DATASET, "the linear probe needs a root folder (where CIFAR-10 was downloaded)")
    for split in ("train", "test"):
        load_cifar10(root, split)


def pretrained_backbone(plugin: SSLMethod, ctx: RunContext, cfg: LinearProbeConfig) -> tuple[nn.Module, float, bool]:
    """The backbone pre-trained on the run's first `max_train` train images, cached under ctx's
    artefacts (a requeued job resumes it: the runner checkpoints the artefact it names).

    Returns (model in eval mode on ctx.device, pre-training seconds, whether it came from cache).
    """
    if plugin.cfg.checkpoint:
        state = plugin.load_checkpoint(Path(plugin.cfg.checkpoint))
        return plugin.load_backbone(state).to(ctx.device).eval(), 0.0, True
    built: list[float] = []

    def build() -> dict[str, Any]:
        start = time.perf_counter()
        images, _ = first(load_cifar10(_root(ctx), "train"), cfg.max_train)
        with collect_histories() as history:
            state = plugin.pretrain(list(images), ctx)
        built.append(time.perf_counter() - start)
        return {"state": state, "seconds": built[0], "history": history}

    saved = build_once(artefact_path(plugin, ctx, cfg), build)  # in a group: all ranks train, rank 0 saves
    add_histories(saved.get("history", {}))  # the pre-training curve, into the run's record
    model = plugin.load_backbone(saved["state"]).to(ctx.device).eval()
    return model, float(saved["seconds"]), not built


def _root(ctx: RunContext) -> str:
    if ctx.spec.root is None:
        raise DataError(DATASET, "the linear probe needs a root folder (where CIFAR-10 was downloaded)")
    return ctx.spec.root


def run_linear_probe(plugin: Plugin, ctx: RunContext, cfg: LinearProbeConfig) -> dict[str, Any]:
    """One linear-probe run: the backbone (pre-trained or cached), pooled features of the train
    and test images, the classifier; what its record holds beyond every record's fields."""
    if not isinstance(plugin, SSLMethod):
        raise BenchError(f"{plugin.name}: the linear probe reads a pre-trained backbone; "
                         f"{plugin.name} is a {plugin.kind} method")
    root = _root(ctx)
    train_x, train_y = first(load_cifar10(root, "train"), cfg.max_train)
    test_x, test_y = first(load_cifar10(root, "test"), cfg.max_test)
    timings: dict[str, float] = {}
    with collect_histories() as history:  # pre-training (from the artefact) and the linear probe
        backbone, timings["pretrain_s"], cached = pretrained_backbone(plugin, ctx, cfg)
        start = time.perf_counter()
        feats = []
        for split, images in (("train", train_x), ("test", test_x)):
            key = FEATURES.key(plugin, artefact_key(plugin, ctx, cfg), root, split, len(images))
            got = FEATURES.get(key)
            if got is None:
                got = pooled_features(plugin, backbone, images, cfg.feature_batch, ctx.device)
                FEATURES.put(key, got)
            feats.append(got)
        timings["features_s"] = time.perf_counter() - start
        del backbone
        start = time.perf_counter()
        result = train_linear(feats[0], torch.tensor(train_y), feats[1], torch.tensor(test_y),
                              CIFAR10.num_classes, cfg, ctx.spec.seed, ctx.device)
        timings["probe_train_s"] = time.perf_counter() - start
    return {"kind": "linear_probe", "linear_probe": asdict(cfg), "n_train": len(train_y), "n_test": len(test_y),
            "metrics": {METRIC: result.top1}, "per_image": {}, "timings": timings, "history": history,
            "extra": {"train_top1": result.train_top1, "final_loss": result.final_loss,
                      "feature_dim": int(feats[0].shape[1]), "pretrain_cached": cached}}


@torch.no_grad()
def pooled_features(plugin: SSLMethod, backbone: nn.Module, images: np.ndarray, batch: int,
                    device: torch.device) -> torch.Tensor:
    """N x D float32 (CPU): each feature map averaged over space, maps concatenated."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.tensor(images[start : start + batch]).permute(0, 3, 1, 2)
        x = prepare_batch(x.float() / 255.0, device)
        with autocast(device):
            maps = plugin.extract(backbone, x, FEATURE_DOMAIN)
        out.append(torch.cat([m.float().mean(dim=(-2, -1)) for m in maps], dim=1).cpu())
    return torch.cat(out)


class FeatureCache:
    """Pooled features per (method's feature identity, data, split): seeds share one extraction."""

    def __init__(self, size: int = FEATURE_CACHE_SIZE) -> None:
        self.size = size
        self.items: OrderedDict[str, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(plugin: SSLMethod, artefact: str, root: str | None, split: str, n: int) -> str:
        identity = {k: v for k, v in protocol_identity(plugin.cfg).items() if not k.startswith("probe_")}
        return config_hash({"method": plugin.name, "features": identity, "artefact": artefact,
                            "root": root, "split": split, "n": n})

    def get(self, key: str) -> torch.Tensor | None:
        if key in self.items:
            self.items.move_to_end(key)
        return self.items.get(key)

    def put(self, key: str, value: torch.Tensor) -> None:
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)


FEATURES = FeatureCache()


@dataclass
class ProbeResult:
    top1: float          # test accuracy, fraction in [0, 1]
    train_top1: float
    final_loss: float


def train_linear(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, cfg: LinearProbeConfig, seed: int, device: torch.device) -> ProbeResult:
    """Fit one linear layer with Adam (cosine-decayed lr) and return its train and test top-1."""
    if cfg.standardize:
        mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Linear(train_x.shape[1], num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps_per_epoch))
    xs, ys = train_x.to(device), train_y.to(device)
    loss = torch.zeros(())
    stage = StageLog("linear probe", cfg.epochs, progress=False, unit="epoch")  # its history: the record's
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(xs), generator=gen).to(device)
        losses = []
        for start in range(0, len(xs), cfg.batch):
            idx = order[start : start + cfg.batch]
            loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
        stage.update(epoch + 1, loss=float(torch.stack(losses).mean()) if losses else math.nan)
    stage.close()
    return ProbeResult(top1=accuracy(model, test_x, test_y, device),
                       train_top1=accuracy(model, train_x, train_y, device), final_loss=float(loss.item()))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch: int = 8192) -> float:
    correct = 0
    for start in range(0, len(x), batch):
        pred = model(x[start : start + batch].to(device)).argmax(1).cpu()
        correct += int((pred == y[start : start + batch]).sum())
    return correct / max(1, len(x))
