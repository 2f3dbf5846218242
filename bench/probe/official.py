"""The official medical probe (REFERENCE §6; zx-pan/mdm `train_interpreter_medical.py`).

One classifier per run, trained on fresh random crops: every step takes `crops_per_step`
labelled images (one shuffled pass an epoch), cuts one random window-sized crop of each, extracts
that crop's features there and then (the backbone's corruption drawn anew; nothing is cached) and
trains on every pixel of the crops. Once per epoch, after `start_epoch`, the last batch's loss
decides when to stop (bench.official.LastBatchStop). No vote: the run's seed is its classifier.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.official import LastBatchStop, ProbeLoop
from bench.probe.mlp import EnsembleMLP
from bench.probe.predict import window_logits
from bench.probe.sampler import member_generators
from bench.probe.train import ProbeConfig, make_optimizer
from bench.progress import SETTINGS, History, StageLog
from bench.resume import loop_state
from bench.steptime import STEPS

# crops (B x 3 x w x w, in [0, 1], on the run's device) -> per-pixel features (B x D x w x w)
CropFeatures = Callable[[Tensor], Tensor]


def random_crop(image: Tensor, labels: Tensor, size: int, ignore: int,
                gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """One random size x size crop of a C x H x W image and its H x W labels; an image smaller
    than the crop is zero-padded, its padding labelled `ignore` (it is no pixel of the image)."""
    h, w = image.shape[-2:]
    top = int(torch.randint(max(1, h - size + 1), (1,), generator=gen))
    left = int(torch.randint(max(1, w - size + 1), (1,), generator=gen))
    x = image[:, top : top + size, left : left + size]
    y = labels[top : top + size, left : left + size]
    pad = (0, size - x.shape[-1], 0, size - x.shape[-2])
    if pad[1] or pad[3]:
        x = F.pad(x, pad)
        y = F.pad(y, pad, value=ignore)
    return x, y


def train_official_probe(features: CropFeatures, dim: int, images: Sequence[tuple[Tensor, np.ndarray]],
                         loop: ProbeLoop, window: int, num_classes: int, cfg: ProbeConfig, seed: int,
                         ignore_index: int, device: torch.device, progress: bool = False) -> EnsembleMLP:
    """Train one classifier on fresh crops of `images` (working-size image, labels); eval mode.

    `dim`: the features' depth. `seed` fixes the classifier's initialisation and the crop order
    and positions; the backbone's own draws (MDM's masks) come from `features`.
    """
    init = member_generators(seed, 1)
    gen = torch.Generator().manual_seed(seed)
    data = [(x, torch.from_numpy(np.ascontiguousarray(y)).long()) for x, y in images]
    probe = EnsembleMLP(1, dim, num_classes, cfg.hidden_sizes(num_classes), cfg.init_std,
                        cfg.bn_momentum, cfg.bn_eps, init).to(device)
    opt = make_optimizer(probe, cfg)
    stop = LastBatchStop(loop.start_epoch, loop.max_break)
    history = History(SETTINGS.max_points)
    resume = loop_state({"model": probe, "opt": opt, "stop": stop, "history": history}, gen, loop.max_epochs)
    STEPS.start("probe")
    with StageLog("probe", loop.max_epochs, progress, unit="epoch", initial=resume.start,
                  history=history) as stage:
        for epoch in range(resume.start, loop.max_epochs):
            if stop.stopped:  # the checkpoint ends with the stop
                break
            probe.train()
            last = torch.zeros((), device=device)
            for chunk in torch.randperm(len(data), generator=gen).split(loop.crops_per_step):
                crops, labels = zip(*(random_crop(data[i][0], data[i][1], window, ignore_index, gen) for i in chunk.tolist()))
                x = torch.stack(crops).to(device, non_blocking=True)
                y, keep = _labelled(torch.stack(labels).reshape(-1), ignore_index, device)
                with torch.no_grad():
                    feats = features(x)
                pixels = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
                if keep is not None:
                    pixels = pixels.index_select(0, keep)
                logits = probe(pixels.float()[None])[0]
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last = loss.detach()
                STEPS.tick("probe")
            value = float(last)  # the epoch's one host sync
            stage.update(epoch + 1, loss=value)
            stop.check(epoch, value)
            resume.step_done(epoch + 1)
    return probe.eval()


def _labelled(labels: Tensor, ignore: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The crops' labelled pixels: their labels on the device, and the positions to keep there
    (None: every pixel). Found on the host, where the labels are made, so the step never waits
    on the device to learn how many pixels it trains on."""
    keep = labels != ignore
    if bool(keep.all()):
        return labels.to(device, non_blocking=True), None
    index = keep.nonzero().squeeze(1)
    return labels[index].to(device, non_blocking=True), index.to(device, non_blocking=True)


@torch.no_grad()
def predict_logits(probe: EnsembleMLP, windows: Sequence[Sequence[Tensor]], out_hw: tuple[int, int],
                   scales: Sequence[float]) -> Tensor:
    """(B, C, H, W) float32 logits of a one-classifier probe on B windows' native-size maps (on
    the CPU): what the official test blends across sliding windows before its argmax. The
    windows go through the projected path together, as many a chunk as its budget holds."""
    if probe.members != 1:
        raise ValueError(f"the official probe is one classifier, got {probe.members}")
    h, w = out_hw
    out = torch.empty(len(windows), probe.num_classes, h, w, device=probe.weights[0].device)
    for a, b, r0, r1, logits in window_logits(probe, windows, out_hw, scales, None, "projected"):
        out[a:b, :, r0:r1] = logits[0].reshape(b - a, r1 - r0, w, probe.num_classes).permute(0, 3, 1, 2)
    return out.cpu()  # the call's one copy to the host
