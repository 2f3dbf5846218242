"""Full-image prediction of the pixel-probe ensemble: project first, upsample after.

The probe's first layer is linear and bilinear upsampling is linear, so they commute:
W . up(F) = up(W . F), and so does the per-image L2 scale. The projected path therefore runs the
first layer (over 95% of the probe's FLOPs) once per native-resolution pixel of each group of
equal-size maps, into one table of K x hidden pre-activations; every output pixel then sums
the bilinear corners of every group (the very indices and weights of
`F.interpolate(mode="bilinear", align_corners=False)`) in one weighted gather, and ReLU /
BatchNorm / the small remaining layers run at full resolution. It equals the dense path
(upsample every channel, then the whole MLP), kept here as the test oracle, up to float32
rounding. Both walk the output in full-width row chunks of bounded memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.probe.bank import CHUNK_BYTES, axis_weights, bilinear_points, chunk_rows_for, hwc_table, row_chunks
from bench.probe.mlp import EnsembleMLP

Path = Literal["projected", "dense"]
Chunks = Iterator[tuple[int, int, Tensor]]  # (first row, last row + 1, (K, rows * W, C) logits)

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


@dataclass(frozen=True)
class _Group:
    """Maps of one native size: rows offset.. of the projection table, pixel-major, then member."""
    offset: int
    h: int
    w: int


def native_table(probe: EnsembleMLP, maps: Sequence[Tensor], scale: float
                 ) -> tuple[Tensor, list[_Group]]:
    """The first layer at native resolution: a (rows, hidden) table and its groups.

    Row offset + (y * w + x) * K + k of a group holds member k's scale * sum_i W0_k[i] . F_i(y, x)
    over the group's maps i, where W0_k[i] are the rows of the first layer's weight (K, d,
    hidden) that map i's slice of the concatenated feature vector meets. One product per map
    serves all K members (as one (c, K * hidden) matrix), written straight into the table. The
    bias b0 rides on the first group only: every output pixel's upsampling weights sum to one,
    so it reaches every pixel once.
    """
    w0 = probe.weights[0].detach()
    k, d, hidden = w0.shape
    if sum(int(m.shape[0]) for m in maps) != d:
        raise ValueError(f"maps hold {sum(int(m.shape[0]) for m in maps)} channels; the probe "
                         f"expects {d}")
    members: dict[tuple[int, int], list[tuple[Tensor, int]]] = {}
    start = 0
    for m in maps:
        members.setdefault((int(m.shape[1]), int(m.shape[2])), []).append((m, start))
        start += int(m.shape[0])
    table = torch.empty(sum(h * w for h, w in members) * k, hidden, device=w0.device)
    bias = probe.biases[0].detach().reshape(1, k * hidden)
    groups: list[_Group] = []
    for (h, w), group_maps in members.items():
        offset = sum(g.h * g.w for g in groups) * k
        out = table[offset:offset + h * w * k].view(h * w, k * hidden)
        for j, (m, first) in enumerate(group_maps):
            c = int(m.shape[0])
            weight = w0[:, first:first + c].permute(1, 0, 2).reshape(c, k * hidden)
            pixels = hwc_table(m, torch.float32, w0.device)
            if j == 0:  # beta = 0 ignores the bias: only the first group carries it
                torch.addmm(bias, pixels, weight, beta=0.0 if groups else 1.0, alpha=scale, out=out)
            else:
                out.addmm_(pixels, weight, alpha=scale)
        groups.append(_Group(offset, h, w))
    return table, groups


def _taps(size: int, out_size: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(out_size, taps) table-row steps (source index * stride) and weights along one axis:
    two taps, or one where the axis is at output size (the kernel copies it)."""
    pos = torch.arange(out_size, device=device)
    if size == out_size:
        return (pos * stride)[:, None], torch.ones(out_size, 1, device=device)
    i0, i1, w0, w1 = axis_weights(size, out_size, pos)
    return torch.stack([i0, i1], -1) * stride, torch.stack([w0, w1], -1)


@torch.no_grad()
def projected_chunk_logits(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                           scale: float, chunk_rows: int | None) -> Chunks:
    """The fast path: the first layer at native resolution, its outputs upsampled.

    Each output pixel of member k is one weighted bag of table rows: the bilinear corners (four,
    fewer along an axis at output size) of every group, with the very indices and weights of
    `F.interpolate(mode="bilinear", align_corners=False)` (y and x weights multiplied), summed by
    one `F.embedding_bag` per row chunk. The full-resolution pre-activations are written once,
    with no per-group buffers.
    """
    table, groups = native_table(probe, maps, scale)
    k, _, hidden = probe.weights[0].shape
    height, width = out_hw
    device = table.device
    axes = [(_taps(g.h, height, g.w * k, device), _taps(g.w, width, k, device)) for g in groups]
    taps = sum(ys.shape[1] * xs.shape[1] for (ys, _), (xs, _) in axes)
    # Per bag (member x pixel): its float32 pre-activations and the later layers' outputs, and
    # its int64 indices and float32 weights.
    bag_bytes = 4 * (hidden + sum(probe.hidden[1:]) + probe.num_classes) + 12 * taps
    rows = chunk_rows or max(1, chunk_budget(device) // (width * k * bag_bytes))
    member = torch.arange(k, device=device).view(k, 1, 1, 1)
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        index, weight = [], []
        for g, ((ys, wy), (xs, wx)) in zip(groups, axes):
            index.append((g.offset + ys[r0:r1, None, :, None] + xs[None, :, None, :]).flatten(2))
            weight.append((wy[r0:r1, None, :, None] * wx[None, :, None, :]).flatten(2))
        bags = (torch.cat(index, -1) + member).view(-1, taps)
        per_bag = torch.cat(weight, -1).expand(k, -1, -1, -1).reshape(-1, taps)
        pre = F.embedding_bag(bags, table, per_sample_weights=per_bag, mode="sum")
        yield r0, r1, probe.predict_after_first(pre.view(k, (r1 - r0) * width, hidden))


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
