"""The bank-based probe training as it was before it moved to the run's device, for timing.

probe_perf.py times it side by side with `bench.probe.train_probe` in one process. What
differs: here the bank stays in append-only segments (a gather selects each segment's pixels
with `nonzero` and scatters them back), a gather checks its image range by reading it on the
host, each step copies its losses to the host and computes the members' span there, and the
natural rule's bookkeeping reads the device after every step. Arithmetic is the same, so both
train the same weights; only the host work differs. Not used by bench itself.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.probe import ProbeConfig, accumulate_grads, make_optimizer  # noqa: E402
from bench.probe.bank import CHUNK_BYTES, SEGMENT_BYTES, bilinear_points  # noqa: E402
from bench.probe.mlp import EnsembleMLP  # noqa: E402
from bench.probe.sampler import PixelStreams, member_generators  # noqa: E402


class LegacyBank:
    """FeatureBank's storage and gathers before consolidation: one list of segments per group."""

    def __init__(self) -> None:
        self._channels: list[int] = []
        self._groups: list[list[int]] = []
        self._spans: list[list[tuple[slice, slice]]] = []
        self._segments: list[list[Tensor]] = []
        self._used: list[int] = []
        self._place: list[list[tuple[int, int, int, int]]] = []
        self._label_hw: list[tuple[int, int]] = []
        self._labels: list[Tensor] = []
        self._scales: list[float] = []
        self._meta: dict[str, Tensor] | None = None
        self._labelled: dict[int, Tensor] = {}

    def add(self, maps: Sequence[Tensor], labels: np.ndarray, scale: float = 1.0) -> None:
        if not self._channels:
            self._channels = [int(m.shape[0]) for m in maps]
            by_size: dict[tuple[int, ...], list[int]] = {}
            for slot, m in enumerate(maps):
                by_size.setdefault(tuple(m.shape[1:]), []).append(slot)
            self._groups = list(by_size.values())
            starts = np.cumsum([0] + self._channels)
            for slots in self._groups:
                offsets = np.cumsum([0] + [self._channels[s] for s in slots])
                self._spans.append([(slice(int(offsets[j]), int(offsets[j + 1])),
                                     slice(int(starts[s]), int(starts[s + 1]))) for j, s in enumerate(slots)])
                self._segments.append([])
                self._used.append(0)
        places = []
        for g, slots in enumerate(self._groups):
            h, w = (int(v) for v in maps[slots[0]].shape[1:])
            segs, width = self._segments[g], self._spans[g][-1][0].stop
            row = self._used[g]
            if not segs or row + h * w > segs[-1].shape[0]:
                images = max(1, SEGMENT_BYTES // (h * w * width * 2))
                segs.append(torch.empty(images * h * w, width, dtype=torch.float16))
                row = 0
            rows = segs[-1][row:row + h * w]
            for (cols, _), slot in zip(self._spans[g], slots):
                rows[:, cols] = maps[slot].detach().permute(1, 2, 0).reshape(h * w, -1)
            self._used[g] = row + h * w
            places.append((len(segs) - 1, row, h, w))
        self._place.append(places)
        lab = torch.from_numpy(np.ascontiguousarray(labels))
        self._label_hw.append((int(lab.shape[0]), int(lab.shape[1])))
        self._labels.append(lab.to(torch.uint8).reshape(-1).clone())
        self._scales.append(float(scale))
        self._meta, self._labelled = None, {}

    @property
    def dim(self) -> int:
        return sum(self._channels)

    @property
    def num_images(self) -> int:
        return len(self._scales)

    def _index(self) -> dict[str, Tensor]:
        if self._meta is not None:
            return self._meta
        place = torch.tensor(self._place, dtype=torch.int64)
        label_hw = torch.tensor(self._label_hw, dtype=torch.int64)
        pixels = label_hw[:, 0] * label_hw[:, 1]
        self._labels = [torch.cat(self._labels)]
        self._meta = {
            "seg": place[..., 0], "row_off": place[..., 1], "map_h": place[..., 2],
            "map_w": place[..., 3], "H": label_hw[:, 0], "W": label_hw[:, 1],
            "pix_off": torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(pixels, 0)]),
            "scale": torch.tensor(self._scales, dtype=torch.float32),
        }
        return self._meta

    def gather(self, image_index: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
        meta = self._index()
        img = image_index.reshape(-1).expand_as(ys)
        if ys.numel() and (int(img.min()) < 0 or int(img.max()) >= self.num_images):
            raise IndexError(f"image index out of range for a bank of {self.num_images}")
        out = torch.empty(ys.numel(), self.dim, dtype=torch.float32)
        step = max(1, CHUNK_BYTES // (4 * self.dim))
        for s in range(0, ys.numel(), step):
            self._gather_into(out[s:s + step], img[s:s + step], ys[s:s + step], xs[s:s + step])
        return out.mul_(meta["scale"][img].unsqueeze(1))

    def _gather_into(self, out: Tensor, img: Tensor, ys: Tensor, xs: Tensor) -> None:
        meta = self._index()
        for g, segs in enumerate(self._segments):
            for k, table in enumerate(segs):
                sel = None if len(segs) == 1 else (meta["seg"][img, g] == k).nonzero().flatten()
                i, y, x = (img, ys, xs) if sel is None else (img[sel], ys[sel], xs[sel])
                if not i.numel():
                    continue
                vals = bilinear_points(table, meta["map_h"][i, g], meta["map_w"][i, g],
                                       meta["H"][i], meta["W"][i], y, x, meta["row_off"][i, g])
                for src, dst in self._spans[g]:
                    if sel is None:
                        out[:, dst] = vals[:, src]
                    else:
                        out[sel, dst] = vals[:, src]

    def labels_at(self, flat: Tensor) -> Tensor:
        self._index()
        return self._labels[0][flat].to(torch.int64)

    def labelled_pixels(self, ignore_index: int) -> Tensor:
        if ignore_index not in self._labelled:
            self._index()
            self._labelled[ignore_index] = torch.nonzero(self._labels[0] != ignore_index).flatten()
        return self._labelled[ignore_index]

    def gather_flat(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        meta = self._index()
        flat1 = flat.reshape(-1)
        img = torch.searchsorted(meta["pix_off"], flat1, right=True) - 1
        local = flat1 - meta["pix_off"][img]
        width = meta["W"][img]
        ys, xs = torch.div(local, width, rounding_mode="floor"), local % width
        feats = self.gather(img, ys, xs).reshape(*flat.shape, self.dim)
        return feats, self.labels_at(flat)


class _EarlyStop:
    def __init__(self, members: int) -> None:
        self.best = torch.full((members,), math.inf)
        self.count = torch.zeros(members, dtype=torch.int64)
        self.active = torch.ones(members, dtype=torch.bool)

    def update(self, loss: Tensor, limit: int, inclusive: bool) -> Tensor:
        improved = loss < self.best
        self.best = torch.where(improved, loss, self.best)
        self.count = torch.where(improved, torch.zeros_like(self.count), self.count + 1)
        over = self.count >= limit if inclusive else self.count > limit
        newly = self.active & over
        self.active &= ~newly
        return newly

    def span(self) -> slice:
        idx = self.active.nonzero().flatten()
        return slice(int(idx[0]), int(idx[-1]) + 1) if idx.numel() else slice(0, 0)


@torch.no_grad()
def _snapshot(model: EnsembleMLP, final: dict[str, Tensor], members: Tensor) -> None:
    idx = members.nonzero().flatten()
    if idx.numel():
        for name, tensor in model.state_dict().items():
            final[name][idx] = tensor[idx]


def train_probe(bank: LegacyBank, num_classes: int, cfg: ProbeConfig, seed: int = 0,
                ignore_index: int = 255, device: torch.device | str = "cpu") -> EnsembleMLP:
    """The previous `bench.probe.train_probe` (without checkpoints and progress)."""
    device = torch.device(device)
    labelled = bank.labelled_pixels(ignore_index)
    gens = member_generators(seed, cfg.ensemble)
    model = EnsembleMLP(cfg.ensemble, bank.dim, num_classes, cfg.hidden_sizes(num_classes),
                        cfg.init_std, cfg.bn_momentum, cfg.bn_eps, gens).to(device)
    streams = PixelStreams(labelled, gens, cfg.batch_pixels, cfg.pixels_per_epoch, cfg.order_bytes)
    opt = make_optimizer(model, cfg)
    final = {name: t.detach().clone() for name, t in model.state_dict().items()}
    stop = _EarlyStop(cfg.ensemble)
    model.train()
    for epoch in range(cfg.max_epochs or 2**62):
        if not bool(stop.active.any()):
            break
        streams.start_epoch()
        totals = torch.zeros(cfg.ensemble)
        for step in range(streams.steps):
            span = stop.span()
            flat = streams.batch_pixels(step, span)
            per_group = max(1, cfg.step_bytes // (flat.shape[1] * bank.dim * 4))
            step_losses = torch.empty(flat.shape[0])
            opt.zero_grad(set_to_none=True)
            for lo in range(span.start, span.stop, per_group):
                group = slice(lo, min(span.stop, lo + per_group))
                rows = slice(group.start - span.start, group.stop - span.start)
                feats, labels = bank.gather_flat(flat[rows])
                step_losses[rows] = accumulate_grads(model, feats.to(device), labels.to(device), group).cpu()
            opt.step()
            losses = torch.full((cfg.ensemble,), math.inf)
            losses[span] = step_losses
            totals += losses
            if cfg.stop_rule == "natural" and epoch > cfg.warmup_epochs:
                _snapshot(model, final, stop.update(losses, cfg.patience_iters, inclusive=False))
                if not bool(stop.active.any()):
                    break
        if cfg.stop_rule == "loss_plateau":
            _snapshot(model, final, stop.update(totals / streams.steps, cfg.patience, inclusive=True))
    _snapshot(model, final, stop.active)
    model.load_state_dict(final)
    return model.eval()
