"""Full-image prediction of the pixel-probe ensemble: project first, upsample after.

The probe's first layer is linear and bilinear upsampling is linear, so they commute:
W . up(F) = up(W . F), and so does the per-image L2 scale. The projected path therefore runs the
first layer (over 95% of the probe's FLOPs) once per native-resolution pixel of each group of
equal-size maps, upsamples the K x hidden pre-activations of each group with the very indices
and weights of `F.interpolate(mode="bilinear", align_corners=False)`, sums the groups (the bias
rides on the first: each pixel's upsampling weights sum to one) and runs ReLU / BatchNorm / the
small remaining layers at full resolution. It equals the dense path (upsample every channel,
then the whole MLP), kept here as the test oracle, up to float32 rounding. Both walk the output
in full-width row chunks of bounded memory.
"""
from __future__ import annotations

from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.probe.bank import CHUNK_BYTES, axis_weights, bilinear_points, chunk_rows_for, hwc_table, row_chunks
from bench.probe.mlp import EnsembleMLP

Path = Literal["projected", "dense"]
Chunks = Iterator[tuple[int, int, Tensor]]  # (first row, last row + 1, (K, rows * W, C) logits)

# Full-resolution float32 buffers one projected row chunk holds at once: the summed
# pre-activations, one group's x-upsampled source rows, and one y-blend temporary.
_PROJECTED_BUFFERS = 3
# A row chunk's budget on a GPU. Measured on one H200 (results/gpu-h200), CHUNK_BYTES chunks
# made both paths launch-bound: one medical window took 31.6 ms on the host against 6.2 ms of
# GPU time (projected), 57.1 against 19.5 ms (dense).
GPU_CHUNK_BYTES = 2**30


def _device(probe: EnsembleMLP) -> torch.device:
    return probe.weights[0].device


def chunk_budget(device: torch.device) -> int:
    """Bytes of one row chunk's buffers: CHUNK_BYTES on a CPU, GPU_CHUNK_BYTES on a GPU."""
    return GPU_CHUNK_BYTES if device.type == "cuda" else CHUNK_BYTES


@torch.no_grad()
def dense_chunk_logits(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                       scale: float, chunk_rows: int | None) -> Chunks:
    """The reference path: every channel upsampled to every output pixel, then the whole MLP."""
    device = _device(probe)
    tables = [hwc_table(m, torch.float32, device) for m in maps]
    dim = sum(t.shape[1] for t in tables)
    rows = chunk_rows or chunk_rows_for(out_hw[1], dim, chunk_budget(device))
    for r0, (ys, xs) in zip(range(0, out_hw[0], rows), row_chunks(out_hw, rows, device)):
        feats = torch.empty(ys.numel(), dim, device=device)
        start = 0
        for m, table in zip(maps, tables):
            stop = start + table.shape[1]
            feats[:, start:stop] = bilinear_points(table, int(m.shape[1]), int(m.shape[2]),
                                                   out_hw[0], out_hw[1], ys, xs)
            start = stop
        yield r0, min(out_hw[0], r0 + rows), probe(feats.mul_(scale))


def native_projections(probe: EnsembleMLP, maps: Sequence[Tensor], scale: float,
                       bias: Tensor | None = None) -> list[Tensor]:
    """Per group of equal-size maps, scale * sum of W0[maps' channels] . F: (K, h, w, hidden).

    The first layer's weight is (K, d, hidden); the channels of map i are the rows of W0 that
    its slice of the concatenated feature vector meets. One product per map serves all K
    members (as one (c, K * hidden) matrix). A `bias` (K, 1, hidden) is added to the first
    group only: the upsampling weights of every output pixel sum to one, so it reaches every
    pixel once. Read as a (K, hidden, h, w) batch, each result is channels-last: what the
    upsampling kernel wants.
    """
    w0 = probe.weights[0].detach()
    k, d, hidden = w0.shape
    if sum(int(m.shape[0]) for m in maps) != d:
        raise ValueError(f"maps hold {sum(int(m.shape[0]) for m in maps)} channels; the probe "
                         f"expects {d}")
    groups: dict[tuple[int, int], Tensor] = {}
    start = 0
    for m in maps:
        c, h, w = (int(v) for v in m.shape)
        weight = w0[:, start:start + c].permute(1, 0, 2).reshape(c, k * hidden)
        table = hwc_table(m, torch.float32, w0.device)
        if (h, w) in groups:
            groups[(h, w)].addmm_(table, weight)
        else:
            groups[(h, w)] = table @ weight
        start += c
    out = [p.mul_(scale).view(h, w, k, hidden).permute(2, 0, 1, 3).contiguous()
           for (h, w), p in groups.items()]
    if bias is not None:
        out[0].add_(bias.view(k, 1, 1, hidden))
    return out


def _upsample_rows(proj: Tensor, out_hw: tuple[int, int], r0: int, r1: int) -> Tensor:
    """Output rows r0..r1 of `proj` (K, h, w, n) bilinearly upsampled to out_hw: (K, rows, W, n).

    Rows first, by hand, on the native width (the source indices and weights of
    `axis_weights`, the upsampling kernel's own); then columns by `F.interpolate` on the
    channels-last (K, n, rows, w) view, which leaves rows as they are (equal sizes copy).
    """
    k, h, w, n = proj.shape
    if h == out_hw[0]:
        rows = proj[:, r0:r1]
    else:
        y0, y1, wy0, wy1 = axis_weights(h, out_hw[0], torch.arange(r0, r1, device=proj.device))
        rows = proj.index_select(1, y0).mul_(wy0[None, :, None, None])
        rows.addcmul_(proj.index_select(1, y1), wy1[None, :, None, None])
    if w == out_hw[1]:
        return rows.clone() if h == out_hw[0] else rows
    nchw = rows.permute(0, 3, 1, 2)  # (K, n, rows, w), channels-last in memory
    up = F.interpolate(nchw, size=(r1 - r0, out_hw[1]), mode="bilinear", align_corners=False)
    return up.permute(0, 2, 3, 1)  # (K, rows, W, n): contiguous when the kernel kept the format


@torch.no_grad()
def projected_chunk_logits(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                           scale: float, chunk_rows: int | None) -> Chunks:
    """The fast path: the first layer at native resolution, its outputs upsampled."""
    projections = native_projections(probe, maps, scale, probe.biases[0].detach())
    k, _, hidden = probe.weights[0].shape
    width = out_hw[1]
    rows = chunk_rows or max(1, chunk_budget(_device(probe)) // (width * k * hidden * 4 * _PROJECTED_BUFFERS))
    for r0 in range(0, out_hw[0], rows):
        r1 = min(out_hw[0], r0 + rows)
        pre: Tensor | None = None
        for proj in projections:
            part = _upsample_rows(proj, out_hw, r0, r1)
            pre = part if pre is None else pre.add_(part)
        assert pre is not None
        h = pre.reshape(k, (r1 - r0) * width, hidden)
        yield r0, r1, probe.predict_after_first(h)


def chunk_logits(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                 scale: float, chunk_rows: int | None, path: Path = "projected") -> Chunks:
    """Row chunks of ensemble logits over the output grid, in eval mode, by either path."""
    if path not in ("projected", "dense"):
        raise ValueError(f"path must be 'projected' or 'dense', got {path!r}")
    chunks = projected_chunk_logits if path == "projected" else dense_chunk_logits
    was_training = probe.training
    probe.eval()
    try:
        yield from chunks(probe, maps, out_hw, scale, chunk_rows)
    finally:
        probe.train(was_training)


def predict_votes(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                  scale: float = 1.0, chunk_rows: int | None = None,
                  path: Path = "projected") -> Tensor:
    """(C, H, W) float32 fraction of members voting for each class at every pixel (on CPU).

    argmax over classes is the ensemble's majority vote; torch.argmax returns the first
    maximum, so ties go to the lower class index. Each member's own vote is the argmax of its
    logits (ties again to the lower index).
    """
    classes, width = probe.num_classes, out_hw[1]
    out = torch.empty(classes, *out_hw)
    for r0, r1, logits in chunk_logits(probe, maps, out_hw, scale, chunk_rows, path):
        choice = logits.argmax(dim=-1)  # (K, N): each member's class per pixel
        votes = torch.zeros(classes, choice.shape[1], device=choice.device)
        votes.scatter_add_(0, choice, torch.ones(choice.shape, device=choice.device))
        out[:, r0:r1] = votes.div_(probe.members).reshape(classes, r1 - r0, width).cpu()
    return out


def predict_probs(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                  scale: float = 1.0, chunk_rows: int | None = None,
                  path: Path = "projected") -> Tensor:
    """(C, H, W) float32 softmax probabilities averaged over members (soft-vote alternative)."""
    classes, width = probe.num_classes, out_hw[1]
    out = torch.empty(classes, *out_hw)
    for r0, r1, logits in chunk_logits(probe, maps, out_hw, scale, chunk_rows, path):
        probs = logits.softmax(dim=-1).mean(dim=0)
        out[:, r0:r1] = probs.T.reshape(classes, r1 - r0, width).cpu()
    return out
