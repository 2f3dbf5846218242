"""Full-image prediction of the pixel-probe ensemble: project first, upsample after.

The probe's first layer is linear and bilinear upsampling is linear, so they commute:
W . up(F) = up(W . F), and so does the per-image L2 scale. The projected path therefore runs the
first layer (over 95% of the probe's FLOPs) once per native-resolution pixel of each group of
equal-size maps, into one table of K x hidden pre-activations; every output pixel then sums
the bilinear corners of every group (the very indices and weights of
`F.interpolate(mode="bilinear", align_corners=False)`) in one weighted gather, and ReLU /
BatchNorm / the small remaining layers run at full resolution. It equals the dense path
(upsample every channel, then the whole MLP), kept here as the test oracle, up to float32
rounding. Both walk the output in chunks of bounded memory.

Several windows go through one call (`predict_window_votes`), on the probe's device: their
first layers fill one table, the corner plan of a window size is built once and cached, and a
chunk is either whole windows (when one fits the budget, as on a GPU) or full-width rows of
one. A chunk costs the same few operators whatever the number of maps or size groups, and the
votes reach the host once per call.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.probe.bank import (
    CHUNK_BYTES,
    GPU_CHUNK_BYTES,
    axis_weights,
    bilinear_points,
    chunk_budget,
    chunk_rows_for,
    hwc_table,
    row_chunks,
    to_device,
)
from bench.probe.mlp import EnsembleMLP

__all__ = ["CHUNK_BYTES", "GPU_CHUNK_BYTES", "chunk_budget", "chunk_logits", "native_table",
           "predict_probs", "predict_votes", "predict_window_probs", "predict_window_votes",
           "window_logits"]

Path = Literal["projected", "dense"]
Chunks = Iterator[tuple[int, int, Tensor]]  # (first row, last row + 1, (K, rows * W, C) logits)
# (first window, last window + 1, first row, last row + 1, (K, windows * rows * W, C) logits)
WindowChunks = Iterator[tuple[int, int, int, int, Tensor]]


def _device(probe: EnsembleMLP) -> torch.device:
    return probe.weights[0].device


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


def _map_layout(probe: EnsembleMLP, maps: Sequence[Tensor]
                ) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
    """Maps by native size: (slot, first input channel, channels) of each, in slot order."""
    d = int(probe.weights[0].shape[1])
    if sum(int(m.shape[0]) for m in maps) != d:
        raise ValueError(f"maps hold {sum(int(m.shape[0]) for m in maps)} channels; the probe "
                         f"expects {d}")
    layout: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    start = 0
    for slot, m in enumerate(maps):
        layout.setdefault((int(m.shape[1]), int(m.shape[2])), []).append((slot, start, int(m.shape[0])))
        start += int(m.shape[0])
    return layout


def native_tables(probe: EnsembleMLP, windows: Sequence[Sequence[Tensor]], scales: Sequence[float]
                  ) -> tuple[Tensor, list[_Group]]:
    """The first layer at native resolution of each window: a (windows * rows, hidden) table.

    Window b's rows start at b * rows; within it, row offset + (y * w + x) * K + k of a group
    holds member k's scale_b * sum_i W0_k[i] . F_i(y, x) over the group's maps i, where W0_k[i]
    are the rows of the first layer's weight (K, d, hidden) that map i's slice of the
    concatenated feature vector meets. One product per map and window serves all K members (as
    one (c, K * hidden) matrix), written straight into the table; each map of all windows goes
    to the device and to float32 at once. The bias b0 rides on the first group only: every
    output pixel's upsampling weights sum to one, so it reaches every pixel once.
    """
    w0 = probe.weights[0].detach()
    k, _, hidden = w0.shape
    device = w0.device
    _check_shapes(windows)
    layout = _map_layout(probe, windows[0])
    rows = sum(h * w for h, w in layout) * k
    table = torch.empty(len(windows) * rows, hidden, device=device)
    bias = probe.biases[0].detach().reshape(1, k * hidden)
    groups: list[_Group] = []
    for (h, w), group_maps in layout.items():
        offset = sum(g.h * g.w for g in groups) * k
        for j, (slot, first, c) in enumerate(group_maps):
            weight = w0[:, first:first + c].permute(1, 0, 2).reshape(c, k * hidden)
            stacked = to_device(torch.stack([maps[slot].detach() for maps in windows]), device)
            pixels = stacked.to(torch.float32).permute(0, 2, 3, 1).reshape(len(windows), h * w, c)
            for b, scale in enumerate(scales):
                out = table[b * rows + offset:b * rows + offset + h * w * k].view(h * w, k * hidden)
                if j == 0:  # beta = 0 ignores the bias: only the first group carries it
                    torch.addmm(bias, pixels[b], weight, beta=0.0 if groups else 1.0, alpha=scale,
                                out=out)
                else:
                    out.addmm_(pixels[b], weight, alpha=scale)
        groups.append(_Group(offset, h, w))
    return table, groups


def _check_shapes(windows: Sequence[Sequence[Tensor]]) -> None:
    shapes = [tuple(m.shape) for m in windows[0]]
    if any([tuple(m.shape) for m in maps] != shapes for maps in windows):
        raise ValueError(f"windows predicted together need maps of one shape, got "
                         f"{sorted({str([tuple(m.shape) for m in maps]) for maps in windows})}")


def native_table(probe: EnsembleMLP, maps: Sequence[Tensor], scale: float
                 ) -> tuple[Tensor, list[_Group]]:
    """`native_tables` of one window."""
    return native_tables(probe, [maps], [scale])


def _taps(size: int, out_size: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(out_size, taps) table-row steps (source index * stride) and weights along one axis:
    two taps, or one where the axis is at output size (the kernel copies it)."""
    pos = torch.arange(out_size, device=device)
    if size == out_size:
        return (pos * stride)[:, None], torch.ones(out_size, 1, device=device)
    i0, i1, w0, w1 = axis_weights(size, out_size, pos)
    return torch.stack([i0, i1], -1) * stride, torch.stack([w0, w1], -1)


@functools.lru_cache(maxsize=16)
def _corner_plan(sizes: tuple[tuple[int, int], ...], out_hw: tuple[int, int], k: int,
                 device: torch.device) -> tuple[Tensor, Tensor]:
    """(H, W, taps) table rows (window 0, member 0) and weights of every output pixel's bag:
    the bilinear corners of every group, y and x weights multiplied. Cached per window shape
    (a run predicts thousands of windows of one shape); read-only."""
    height, width = out_hw
    index, weight, offset = [], [], 0
    for h, w in sizes:
        (ys, wy), (xs, wx) = _taps(h, height, w * k, device), _taps(w, width, k, device)
        index.append((offset + ys[:, None, :, None] + xs[None, :, None, :]).flatten(2))
        weight.append((wy[:, None, :, None] * wx[None, :, None, :]).flatten(2))
        offset += h * w * k
    return torch.cat(index, -1), torch.cat(weight, -1)


def _chunks(windows: int, height: int, rows: int) -> Iterator[tuple[int, int, int, int]]:
    """(b0, b1, r0, r1): whole windows when `rows` covers one, else row blocks of one window."""
    if rows >= height:
        per = rows // height
        for b0 in range(0, windows, per):
            yield b0, min(windows, b0 + per), 0, height
        return
    for b in range(windows):
        for r0 in range(0, height, rows):
            yield b, b + 1, r0, min(height, r0 + rows)


@torch.no_grad()
def projected_window_logits(probe: EnsembleMLP, windows: Sequence[Sequence[Tensor]],
                            out_hw: tuple[int, int], scales: Sequence[float],
                            chunk_rows: int | None) -> WindowChunks:
    """The fast path: the first layer at native resolution, its outputs upsampled.

    Each output pixel of member k is one weighted bag of table rows: the bilinear corners (four,
    fewer along an axis at output size) of every group, summed by one `F.embedding_bag` per
    chunk. The full-resolution pre-activations are written once, with no per-group buffers.
    """
    table, groups = native_tables(probe, windows, scales)
    k, _, hidden = probe.weights[0].shape
    height, width = out_hw
    device = table.device
    index, weight = _corner_plan(tuple((g.h, g.w) for g in groups), out_hw, k, device)
    taps = index.shape[-1]
    # Per bag (member x pixel): its float32 pre-activations and the later layers' outputs, and
    # its int64 indices and float32 weights.
    bag_bytes = 4 * (hidden + sum(probe.hidden[1:]) + probe.num_classes) + 12 * taps
    rows = chunk_rows or max(1, chunk_budget(device) // (width * k * bag_bytes))
    member = torch.arange(k, device=device).view(k, 1, 1, 1, 1)
    window = torch.arange(len(windows), device=device).view(-1, 1, 1, 1) * (table.shape[0] // len(windows))
    folded = probe.folded_layers()
    for b0, b1, r0, r1 in _chunks(len(windows), height, rows):
        bags = (index[r0:r1] + window[b0:b1] + member).view(-1, taps)
        per_bag = weight[r0:r1].expand(k, b1 - b0, -1, -1, -1).reshape(-1, taps)
        pre = F.embedding_bag(bags, table, per_sample_weights=per_bag, mode="sum")
        yield b0, b1, r0, r1, probe.predict_after_first(pre.view(k, -1, hidden), folded)


def _windows_per_table(probe: EnsembleMLP, maps: Sequence[Tensor]) -> int:
    """Windows whose native tables fit one chunk budget (at least one): on a CPU one window at a
    time, as ever; on a GPU a run's window batch."""
    k, _, hidden = probe.weights[0].shape
    table_bytes = 4 * k * hidden * sum(int(m.shape[1]) * int(m.shape[2]) for m in maps)
    return max(1, chunk_budget(_device(probe)) // max(1, table_bytes))


def window_logits(probe: EnsembleMLP, windows: Sequence[Sequence[Tensor]],
                   out_hw: tuple[int, int], scales: Sequence[float], chunk_rows: int | None,
                   path: Path) -> WindowChunks:
    """Chunks of ensemble logits over several windows' output grids, in eval mode, by either
    path: (first window, last window + 1, first row, last row + 1, (K, windows * rows * W, C))."""
    if path not in ("projected", "dense"):
        raise ValueError(f"path must be 'projected' or 'dense', got {path!r}")
    if len(scales) != len(windows) or not windows:
        raise ValueError(f"need one scale per window, got {len(scales)} for {len(windows)}")
    was_training = probe.training
    probe.eval()
    try:
        if path == "projected":
            _check_shapes(windows)
            per = _windows_per_table(probe, windows[0])
            for b0 in range(0, len(windows), per):
                for a, b, r0, r1, logits in projected_window_logits(
                        probe, windows[b0:b0 + per], out_hw, scales[b0:b0 + per], chunk_rows):
                    yield b0 + a, b0 + b, r0, r1, logits
            return
        for b, (maps, scale) in enumerate(zip(windows, scales)):
            for r0, r1, logits in dense_chunk_logits(probe, maps, out_hw, scale, chunk_rows):
                yield b, b + 1, r0, r1, logits
    finally:
        probe.train(was_training)


def chunk_logits(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                 scale: float, chunk_rows: int | None, path: Path = "projected") -> Chunks:
    """Row chunks of one window's ensemble logits, in eval mode, by either path."""
    for _, _, r0, r1, logits in window_logits(probe, [maps], out_hw, [scale], chunk_rows, path):
        yield r0, r1, logits


def predict_window_votes(probe: EnsembleMLP, windows: Sequence[Sequence[Tensor]],
                         out_hw: tuple[int, int], scales: Sequence[float] | None = None,
                         chunk_rows: int | None = None, path: Path = "projected") -> Tensor:
    """(B, C, H, W) float32 fraction of members voting for each class at every pixel of each
    window (on the host; computed on the probe's device, copied once).

    argmax over classes is the ensemble's majority vote; torch.argmax returns the first
    maximum, so ties go to the lower class index. Each member's own vote is the argmax of its
    logits (ties again to the lower index).
    """
    scales = [1.0] * len(windows) if scales is None else list(scales)
    classes, (height, width) = probe.num_classes, out_hw
    votes = torch.zeros(len(windows), classes, height, width, device=_device(probe))
    one = torch.ones((), device=votes.device)
    for b0, b1, r0, r1, logits in window_logits(probe, windows, out_hw, scales, chunk_rows, path):
        choice = logits.argmax(dim=-1).view(probe.members, b1 - b0, -1).transpose(0, 1)
        view = votes[b0:b1, :, r0:r1].view(b1 - b0, classes, -1)
        view.scatter_add_(1, choice, one.expand(choice.shape))
    return votes.div_(probe.members).cpu()


def predict_window_probs(probe: EnsembleMLP, windows: Sequence[Sequence[Tensor]],
                         out_hw: tuple[int, int], scales: Sequence[float] | None = None,
                         chunk_rows: int | None = None, path: Path = "projected") -> Tensor:
    """(B, C, H, W) float32 softmax probabilities averaged over members (soft-vote alternative)."""
    scales = [1.0] * len(windows) if scales is None else list(scales)
    classes, (height, width) = probe.num_classes, out_hw
    out = torch.empty(len(windows), classes, height, width, device=_device(probe))
    for b0, b1, r0, r1, logits in window_logits(probe, windows, out_hw, scales, chunk_rows, path):
        probs = logits.softmax(dim=-1).mean(dim=0).view(b1 - b0, -1, classes)
        out[b0:b1, :, r0:r1] = probs.transpose(1, 2).reshape(b1 - b0, classes, r1 - r0, width)
    return out.cpu()


def predict_votes(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                  scale: float = 1.0, chunk_rows: int | None = None,
                  path: Path = "projected") -> Tensor:
    """(C, H, W) float32 fraction of members voting for each class at every pixel of one window
    (on the host); `predict_window_votes` of several windows at once is faster on a GPU."""
    return predict_window_votes(probe, [maps], out_hw, [scale], chunk_rows, path)[0]


def predict_probs(probe: EnsembleMLP, maps: Sequence[Tensor], out_hw: tuple[int, int],
                  scale: float = 1.0, chunk_rows: int | None = None,
                  path: Path = "projected") -> Tensor:
    """(C, H, W) float32 softmax probabilities averaged over members, of one window."""
    return predict_window_probs(probe, [maps], out_hw, [scale], chunk_rows, path)[0]
