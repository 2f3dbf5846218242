"""Native-resolution storage of SSL feature maps for pixel probes.

The reference implementations upsample every decoder map to the label resolution and keep the
result for the whole training set in float32 (44 GB for FFHQ-34). Here each map is kept at the
size the backbone produced it, in float16, and a pixel's full-resolution feature is rebuilt on
demand by bilinear interpolation with the source indices and weights of `F.interpolate(...,
mode="bilinear", align_corners=False)`, equal to it up to float32 rounding. Memory then scales
with the backbone's native feature size, not with H x W x D.

The bank lives where the probe trains (`FeatureBank.to`): in GPU memory when it fits, so a
training batch is gathered and interpolated there; otherwise in host memory, from which only a
batch's bilinear corner rows are picked, into pinned buffers, and copied to the GPU on a side
stream, one batch ahead.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

# Bytes of float32 features one row chunk may hold when maps are upsampled whole rows at a time.
CHUNK_BYTES = 64 * 2**20
# A chunk's budget on a GPU. Measured on one H200 (results/gpu-h200), CHUNK_BYTES chunks made
# prediction launch-bound: one medical window took 31.6 ms on the host against 6.2 ms of GPU
# time (projected), 57.1 against 19.5 ms (dense). At 2 GiB a paper-preset batch of 8 windows is
# 2 chunks (medical) or 8 (FFHQ-34). Training gathers are chunked alike.
GPU_CHUNK_BYTES = 2 * 2**30
# Bytes of one float16 storage segment of the bank: large enough to be its own memory mapping,
# so nothing the bank allocates stays resident in the allocator's heap after use.
SEGMENT_BYTES = 256 * 2**20


def chunk_budget(device: torch.device) -> int:
    """Bytes of one chunk's buffers: CHUNK_BYTES on a CPU, GPU_CHUNK_BYTES on a GPU."""
    return GPU_CHUNK_BYTES if device.type == "cuda" else CHUNK_BYTES


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """`t` on `device`. A host tensor bound for a GPU goes through pinned memory and is copied
    asynchronously: a copy from pageable memory would wait for all work queued on the GPU."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def axis_weights(in_size: Tensor | int, out_size: Tensor | int, pos: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices (i0, i1) and weights (w0, w1) of 1-D linear resampling at output `pos`.

    Mirrors PyTorch's upsampling kernel step by step (float32 ratio = in / out, source =
    ratio * (pos + 0.5) - 0.5 rounded once, clamped at 0, floor, edge guard), so indices and
    weights are the kernel's own and interpolated values agree with F.interpolate to float32
    rounding (the kernel's fused multiply-adds, which vary by build, rule out bit equality).
    Sizes may be per-position tensors.
    """
    in_t = torch.as_tensor(in_size, dtype=torch.int64, device=pos.device)
    out_t = torch.as_tensor(out_size, dtype=torch.int64, device=pos.device)
    ratio = (in_t.to(torch.float32) / out_t.to(torch.float32)).to(torch.float64)
    # One rounding of ratio * (pos + 0.5) - 0.5, exact in float64, as the kernel's fused op does.
    src = (ratio * (pos.to(torch.float64) + 0.5) - 0.5).to(torch.float32)
    src = torch.where(src < 0, torch.zeros_like(src), src)
    i0 = torch.minimum(torch.floor(src).to(torch.int64), in_t - 1)
    w1 = (src - i0.to(torch.float32)).clamp(0.0, 1.0)
    same = in_t == out_t  # the kernel copies instead of interpolating
    i0 = torch.where(same, pos.to(torch.int64), i0)
    w1 = torch.where(same, torch.zeros_like(w1), w1)
    i1 = i0 + (i0 < in_t - 1).to(torch.int64)
    i1 = torch.where(same, i0, i1)
    return i0, i1, 1.0 - w1, w1


@dataclass(frozen=True)
class Corners:
    """Where the bilinear value of each of n pixels comes from: the table rows of its four
    corners (y0x0, y0x1, y1x0, y1x1) and the (n, 1) weights wx0, wx1, wy0, wy1."""
    rows: tuple[Tensor, Tensor, Tensor, Tensor]
    weights: tuple[Tensor, Tensor, Tensor, Tensor]


def corners(h: Tensor | int, w: Tensor | int, out_h: Tensor | int, out_w: Tensor | int,
            ys: Tensor, xs: Tensor, row_offset: Tensor | int = 0) -> Corners:
    """The corners of pixels (ys, xs) of an (h*w, C) row-major table upsampled to out_h x out_w."""
    y0, y1, wy0, wy1 = axis_weights(h, out_h, ys)
    x0, x1, wx0, wx1 = axis_weights(w, out_w, xs)
    w_t = torch.as_tensor(w, dtype=torch.int64, device=ys.device)
    base = torch.as_tensor(row_offset, dtype=torch.int64, device=ys.device)
    top, bottom = base + y0 * w_t, base + y1 * w_t
    return Corners((top + x0, top + x1, bottom + x0, bottom + x1),
                   tuple(t.unsqueeze(-1) for t in (wx0, wx1, wy0, wy1)))  # type: ignore[arg-type]


def combine(row: Callable[[int], Tensor], weights: Sequence[Tensor]) -> Tensor:
    """(a*wx0 + b*wx1)*wy0 + (c*wx0 + d*wx1)*wy1 of corner rows row(0..3), as the kernel combines
    them, in float32, in place: float16 rows promote inside mul/addcmul, and at most three (n, C)
    float32 buffers exist at once (rows are fetched when needed)."""
    wx0, wx1, wy0, wy1 = weights

    def pair(i: int) -> Tensor:
        return torch.mul(row(i), wx0).addcmul_(row(i + 1), wx1)

    return pair(0).mul_(wy0).addcmul_(pair(2), wy1)


def bilinear_points(table: Tensor, h: Tensor | int, w: Tensor | int, out_h: Tensor | int,
                    out_w: Tensor | int, ys: Tensor, xs: Tensor, row_offset: Tensor | int = 0
                    ) -> Tensor:
    """Values of an (h*w, C) row-major pixel table upsampled to out_h x out_w, at pixels (ys, xs)."""
    c = corners(h, w, out_h, out_w, ys, xs, row_offset)
    return combine(lambda i: table.index_select(0, c.rows[i]), c.weights)


def hwc_table(fmap: Tensor, dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
    """A (C, h, w) map as an (h*w, C) table, so one pixel's channels are one contiguous row."""
    if fmap.dim() != 3:
        raise ValueError(f"feature maps must be C x h x w, got shape {tuple(fmap.shape)}")
    c, h, w = fmap.shape
    return fmap.detach().to(device=device, dtype=dtype).permute(1, 2, 0).reshape(h * w, c)


def chunk_rows_for(width: int, dim: int, budget: int = CHUNK_BYTES) -> int:
    """How many full-width float32 output rows of `dim` channels fit in the chunk budget."""
    return max(1, budget // max(1, width * dim * 4))


def row_chunks(out_hw: tuple[int, int], chunk_rows: int, device: torch.device | str = "cpu"
               ) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (ys, xs) pixel coordinates of consecutive blocks of `chunk_rows` full rows."""
    height, width = out_hw
    cols = torch.arange(width, device=device)
    for r0 in range(0, height, chunk_rows):
        rows = torch.arange(r0, min(height, r0 + chunk_rows), device=device)
        yield rows.repeat_interleave(width), cols.repeat(rows.numel())


@functools.lru_cache(maxsize=32)
def _gram(size: int, out_size: int) -> Tensor:
    """U^T U (size x size, float64) of the 1-D linear resampling matrix U (out_size x size).
    Cached: every window of a run asks for the same few sizes. Read-only."""
    i0, i1, w0, w1 = axis_weights(size, out_size, torch.arange(out_size))
    u = torch.zeros(out_size, size, dtype=torch.float64)
    rows = torch.arange(out_size)
    u.index_put_((rows, i0), w0.double(), accumulate=True)
    u.index_put_((rows, i1), w1.double(), accumulate=True)
    return u.T @ u


def global_l2_scale(maps: Sequence[Tensor], out_hw: tuple[int, int],
                    chunk_bytes: int = CHUNK_BYTES) -> float:
    """1 / ||F|| for F = all maps upsampled to out_hw and concatenated (MDM's medical normaliser).

    Without upsampling anything: bilinear upsampling (align_corners=False, the kernel's own
    indices and weights) is separable, up(f) = U_y f U_x^T, so each channel's squared norm is
    <f, (U_y^T U_y) f (U_x^T U_x)>, products of native size in float64, a channel chunk of at
    most `chunk_bytes` at a time. No full-resolution buffer is ever made: one per window
    fragmented the heap between the feature cache's long-lived entries (bench.device).
    """
    total = 0.0
    for fmap in maps:
        c, h, w = (int(v) for v in fmap.shape)
        gram_y, gram_x = _gram(h, out_hw[0]), _gram(w, out_hw[1])
        step = max(1, chunk_bytes // (h * w * 8 * 2))
        for c0 in range(0, c, step):
            part = fmap[c0:c0 + step].detach().to("cpu", torch.float64)
            total += float((part * (gram_y @ part @ gram_x)).sum())
    if not total > 0.0 or not math.isfinite(total):
        raise ValueError(f"cannot L2-normalise features whose squared norm is {total}")
    return 1.0 / math.sqrt(total)


@dataclass
class Staged:
    """One batch on its way from the bank: what `FeatureBank.take` needs to finish it.

    Resident banks keep the pixels' (image, y, x) and interpolate at `take`; host banks feeding
    a GPU have already picked each pixel chunk's corner rows (`parts`, per chunk and size group)
    and queued their copy on a side stream that `ready` marks the end of.
    """
    shape: torch.Size
    img: Tensor
    ys: Tensor
    xs: Tensor
    labels: Tensor
    scale: Tensor
    parts: list[list[tuple[list[Tensor], list[Tensor]]]] | None = None
    ready: torch.cuda.Event | None = None


class FeatureBank:
    """Training features of a probe: native-size float16 maps, label grids and per-image scales.

    Maps of equal native size are stored side by side in one (rows, channels) table per size
    group, so a batch is interpolated once per distinct size rather than once per map. Filling
    writes maps straight into large append-only segments (never copying or freeing stored
    features, so its resident memory is the stored bytes plus one image's maps in flight);
    before the first gather each group's segments become one table, copied and released one
    segment at a time, so a gather is one lookup per group however many images the bank holds.
    `reserve_images` sizes the first segment for that many images (unused capacity is never
    touched, hence never resident).
    """

    def __init__(self, reserve_images: int = 0) -> None:
        self._reserve = reserve_images
        self._channels: list[int] = []
        self._groups: list[list[int]] = []  # slots of each size group, in slot order
        self._spans: list[list[tuple[slice, slice]]] = []  # group columns -> output columns
        self._segments: list[list[Tensor]] = []
        self._used: list[int] = []  # rows used in each group's last segment
        self._place: list[list[tuple[int, int, int, int]]] = []  # per image/group: seg, row, h, w
        self._label_hw: list[tuple[int, int]] = []
        self._labels: list[Tensor] = []
        self._scales: list[float] = []
        self._meta: dict[str, Tensor] | None = None
        self._labelled: dict[int, Tensor] = {}
        self.device = torch.device("cpu")  # where gathered features are computed and returned
        self._storage = torch.device("cpu")  # where tables, labels and lookups live
        self._stage_on_host = False  # gather corner rows where the tables are, combine on device
        self._stream: torch.cuda.Stream | None = None
        self._forced: bool | None = None  # an explicit `to(resident=...)`

    def add(self, maps: Sequence[Tensor], labels: np.ndarray | Tensor, scale: float = 1.0) -> None:
        """Store one image's (or window's) maps, its H x W label map and its feature multiplier.

        Maps are stored unscaled: applying a tiny L2 scale before the float16 cast would push
        values into float16's subnormal range and lose precision.
        """
        lab = labels if isinstance(labels, Tensor) else torch.from_numpy(
            np.ascontiguousarray(labels))
        if lab.dim() != 2 or lab.is_floating_point() or lab.numel() == 0:
            raise ValueError(f"labels must be a non-empty integer H x W map, got {lab.dtype} "
                             f"{tuple(lab.shape)}")
        if not maps or not math.isfinite(scale):
            raise ValueError("need at least one feature map and a finite scale")
        if any(m.dim() != 3 for m in maps):
            raise ValueError(f"maps must be C x h x w, got {[tuple(m.shape) for m in maps]}")
        if not self._channels:
            self._start(maps)
        if [int(m.shape[0]) for m in maps] != self._channels:
            raise ValueError(f"map channels {[int(m.shape[0]) for m in maps]} differ from "
                             f"the bank's {self._channels}")
        places = [self._write(g, maps) for g in range(len(self._groups))]
        for g, (seg, row, h, w) in enumerate(places):  # commit only once every group is valid
            self._used[g] = row + h * w
        self._place.append(places)
        self._label_hw.append((int(lab.shape[0]), int(lab.shape[1])))
        lab = lab.cpu()
        small = bool(lab.min() >= 0) and bool(lab.max() <= 255)
        self._labels.append(lab.to(torch.uint8 if small else torch.int32).reshape(-1).clone())
        self._scales.append(float(scale))
        self._meta, self._labelled = None, {}

    def _start(self, maps: Sequence[Tensor]) -> None:
        self._channels = [int(m.shape[0]) for m in maps]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for slot, m in enumerate(maps):
            by_size.setdefault(tuple(m.shape[1:]), []).append(slot)
        self._groups = list(by_size.values())
        starts = np.cumsum([0] + self._channels)
        for slots in self._groups:
            offsets = np.cumsum([0] + [self._channels[s] for s in slots])
            self._spans.append([(slice(int(offsets[j]), int(offsets[j + 1])),
                                 slice(int(starts[s]), int(starts[s + 1])))
                                for j, s in enumerate(slots)])
            self._segments.append([])
            self._used.append(0)

    def _write(self, g: int, maps: Sequence[Tensor]) -> tuple[int, int, int, int]:
        """Copy group g's maps into free rows (a new segment if needed); return where."""
        sizes = {tuple(int(v) for v in maps[s].shape[1:]) for s in self._groups[g]}
        if len(sizes) != 1:
            raise ValueError(f"maps {self._groups[g]} shared a size in the first image, not here")
        h, w = sizes.pop()
        segs, width = self._segments[g], self._spans[g][-1][0].stop
        row = self._used[g]
        if not segs or row + h * w > segs[-1].shape[0]:
            images = max(1, self._reserve if not segs else 0, SEGMENT_BYTES // (h * w * width * 2))
            segs.append(torch.empty(images * h * w, width, dtype=torch.float16))
            self._used[g] = row = 0
        rows = segs[-1][row:row + h * w]
        for (cols, _), slot in zip(self._spans[g], self._groups[g]):
            rows[:, cols] = maps[slot].detach().permute(1, 2, 0).reshape(h * w, -1)
        if not bool(torch.isfinite(rows).all()):
            raise ValueError("feature maps hold values that are not finite in float16")
        return len(segs) - 1, row, h, w

    @property
    def dim(self) -> int:
        return sum(self._channels)

    @property
    def num_images(self) -> int:
        return len(self._scales)

    @property
    def nbytes(self) -> int:
        """Bytes of stored features and labels (what the bank holds resident)."""
        per_pixel = [self._spans[g][-1][0].stop * 2 for g in range(len(self._groups))]
        features = sum(h * w * per_pixel[g] for places in self._place
                       for g, (_, _, h, w) in enumerate(places))
        return features + sum(t.numel() * t.element_size() for t in self._labels)

    @property
    def resident(self) -> bool:
        """Whether gathers read the tables where they compute (else corner rows are staged)."""
        return not self._stage_on_host

    def to(self, device: torch.device | str, reserve_bytes: int = 0,
           resident: bool | None = None) -> FeatureBank:
        """Keep the bank where a probe training on `device` reads it fastest; returns self.

        On a GPU the tables, labels and lookups move to its memory when they and `reserve_bytes`
        (the training's own working set) fit its free memory. Otherwise they stay in host memory,
        and each batch's corner rows are picked there into pinned buffers and copied to the GPU
        on a side stream, one batch ahead (`stage`): pinning the tables themselves (tens of GB)
        would buy nothing, since the rows a batch needs are scattered through them and must be
        gathered into one buffer first anyway. On a CPU nothing moves.
        `resident` True or False decides instead of the free memory, for this and every later
        placement (False on a CPU: the staged path, for tests). Gathers return features on
        `device` from then on.
        """
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if resident is not None:
            self._forced = resident
        elif self._forced is not None:  # an explicit choice holds for later placements
            resident = self._forced
        else:
            resident = device.type != "cuda" or self._fits(device, reserve_bytes)
        self.device = device
        self._storage = device if resident else torch.device("cpu")
        self._stage_on_host = not resident
        self._stream = None
        self._meta, self._labelled = None, {}
        if self._scales:
            self._index()
        return self

    def _fits(self, device: torch.device, reserve_bytes: int) -> bool:
        free, _ = torch.cuda.mem_get_info(device)
        here = self.nbytes if self._storage == device else 0  # already there: its memory is its own
        return self.nbytes + reserve_bytes <= free + here

    def _consolidate(self) -> None:
        """One table per size group, on the storage device (rows of images renumbered).

        Only used rows are copied, one segment at a time, each segment released as soon as it
        is copied: the resident peak is the bank plus one segment.
        """
        for g, segs in enumerate(self._segments):
            if len(segs) == 1 and segs[0].device == self._storage:
                continue
            ends = [0] * len(segs)
            for places in self._place:
                seg, row, h, w = places[g]
                ends[seg] = max(ends[seg], row + h * w)
            table = torch.empty(sum(ends), segs[0].shape[1], dtype=torch.float16, device=self._storage)
            starts = np.cumsum([0] + ends).tolist()
            for k in range(len(segs)):
                table[starts[k]:starts[k + 1]].copy_(segs[k][:ends[k]])
                segs[k] = torch.empty(0, dtype=torch.float16)  # release the segment's storage now
            self._segments[g] = [table]
            self._used[g] = table.shape[0]
            for places in self._place:
                seg, row, h, w = places[g]
                places[g] = (0, starts[seg] + row, h, w)

    def _index(self) -> dict[str, Tensor]:
        """Per-image lookup tensors on the storage device (built once after the last add)."""
        if self._meta is not None:
            return self._meta
        if not self._scales:
            raise ValueError("the feature bank is empty")
        self._consolidate()
        place = torch.tensor(self._place, dtype=torch.int64)  # (images, groups, 4)
        label_hw = torch.tensor(self._label_hw, dtype=torch.int64)
        pixels = label_hw[:, 0] * label_hw[:, 1]
        wide = any(lab.dtype == torch.int32 for lab in self._labels)
        self._labels = [torch.cat([(lab.to(torch.int32) if wide else lab).to(self._storage)
                                   for lab in self._labels])]
        meta = {
            "row_off": place[..., 1], "map_h": place[..., 2],
            "map_w": place[..., 3], "H": label_hw[:, 0], "W": label_hw[:, 1],
            "pix_off": torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(pixels, 0)]),
            "scale": torch.tensor(self._scales, dtype=torch.float32),
        }
        self._meta = {name: t.to(self._storage) for name, t in meta.items()}
        return self._meta

    def _tables(self) -> list[Tensor]:
        return [segs[0] for segs in self._segments]

    def _chunk_pixels(self) -> int:
        """Pixels whose float32 features fill one chunk (the bound on gather scratch memory)."""
        return max(1, chunk_budget(self.device) // (4 * self.dim))

    def gather(self, image_index: int | Tensor, ys: Tensor, xs: Tensor) -> Tensor:
        """(n, dim) float32 full-resolution features at label-grid pixels, times the image scale.

        `image_index` is one image or one index per pixel, so a batch that mixes images is
        interpolated in one vectorised pass per size group, in pixel chunks that bound the
        float32 scratch memory. Features come back on the bank's device.
        """
        self._index()
        ys = torch.as_tensor(ys, dtype=torch.int64).reshape(-1).to(self._storage)
        xs = torch.as_tensor(xs, dtype=torch.int64).reshape(-1).to(self._storage)
        img = torch.as_tensor(image_index, dtype=torch.int64).reshape(-1).to(self._storage)
        img = img.expand_as(ys)
        if ys.numel() and (int(img.min()) < 0 or int(img.max()) >= self.num_images):
            raise IndexError(f"image index out of range for a bank of {self.num_images}")
        labels = torch.zeros(ys.shape, dtype=torch.int64, device=self._storage)
        return self.take(self._stage(ys.shape, img, ys, xs, labels))[0]

    def stage(self, flat: Tensor) -> Staged:
        """Start fetching the features and labels of global flat pixel indices (valid ones: no
        range check, which would wait on the device); `take` finishes them. For a bank on the
        host feeding a GPU, the corner rows are picked here and copied on a side stream, so
        staging the next batch before computing on this one overlaps the two."""
        self._index()
        flat = flat.to(self._storage)
        img, ys, xs = self.locate(flat.reshape(-1))
        return self._stage(flat.shape, img, ys, xs, self.labels_at(flat.reshape(-1)))

    def _stage(self, shape: torch.Size, img: Tensor, ys: Tensor, xs: Tensor, labels: Tensor
               ) -> Staged:
        meta = self._index()
        scale = meta["scale"][img]
        if not self._stage_on_host:
            return Staged(shape, img, ys, xs, labels, scale)
        cuda = self.device.type == "cuda"
        if cuda and self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        parts = []
        step = self._chunk_pixels()
        with torch.cuda.stream(self._stream) if cuda else contextlib.nullcontext():
            for s in range(0, ys.numel(), step):
                i, y, x = img[s:s + step], ys[s:s + step], xs[s:s + step]
                groups = []
                for g, table in enumerate(self._tables()):
                    c = corners(meta["map_h"][i, g], meta["map_w"][i, g], meta["H"][i],
                                meta["W"][i], y, x, meta["row_off"][i, g])
                    rows = [self._pick(table, r) for r in c.rows]
                    groups.append(([self._send(r) for r in rows],
                                   [self._send(w) for w in c.weights]))
                parts.append(groups)
            labels, scale = self._send(labels), self._send(scale)
            ready = None
            if cuda:
                ready = torch.cuda.Event()
                ready.record(self._stream)
        return Staged(shape, img, ys, xs, labels, scale, parts, ready)

    def _pick(self, table: Tensor, rows: Tensor) -> Tensor:
        """Table rows into (pinned, when they go on to a GPU) host memory."""
        if self.device.type != "cuda":
            return table.index_select(0, rows)
        out = torch.empty(rows.numel(), table.shape[1], dtype=table.dtype, pin_memory=True)
        return torch.index_select(table, 0, rows, out=out)

    def _send(self, t: Tensor) -> Tensor:
        """Queue the copy of a host tensor to the device (on the current, side, stream)."""
        if t.device == self.device:
            return t
        return (t if t.is_pinned() else t.pin_memory()).to(self.device, non_blocking=True)

    def take(self, staged: Staged) -> tuple[Tensor, Tensor]:
        """Features (*shape, dim) float32 times the image scale, and labels (*shape) int64, of a
        staged batch, on the bank's device. Queues work only: nothing waits on the device."""
        if staged.ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(staged.ready)
            for t in _staged_tensors(staged):
                t.record_stream(current)
        n = staged.ys.numel()
        out = torch.empty(n, self.dim, dtype=torch.float32, device=self.device)
        step = self._chunk_pixels()
        for j, s in enumerate(range(0, n, step)):
            if staged.parts is None:
                self._interpolate_into(out[s:s + step], staged.img[s:s + step],
                                       staged.ys[s:s + step], staged.xs[s:s + step])
                continue
            for g, (rows, weights) in enumerate(staged.parts[j]):
                self._place_columns(out[s:s + step], g, combine(rows.__getitem__, weights))
        out.mul_(staged.scale.unsqueeze(1))
        return out.reshape(*staged.shape, self.dim), staged.labels.to(torch.int64).reshape(staged.shape)

    def _interpolate_into(self, out: Tensor, img: Tensor, ys: Tensor, xs: Tensor) -> None:
        meta = self._index()
        for g, table in enumerate(self._tables()):
            vals = bilinear_points(table, meta["map_h"][img, g], meta["map_w"][img, g],
                                   meta["H"][img], meta["W"][img], ys, xs, meta["row_off"][img, g])
            self._place_columns(out, g, vals)

    def _place_columns(self, out: Tensor, g: int, vals: Tensor) -> None:
        for src, dst in self._spans[g]:  # contiguous column blocks, no scatter
            out[:, dst] = vals[:, src]

    def labels_at(self, flat: Tensor) -> Tensor:
        """Class labels (int64) of global flat pixel indices."""
        self._index()
        return self._labels[0][flat.to(self._storage)].to(torch.int64)

    def labelled_pixels(self, ignore_index: int) -> Tensor:
        """Sorted global flat indices of every pixel whose label is not `ignore_index`."""
        if ignore_index not in self._labelled:
            self._index()
            self._labelled[ignore_index] = torch.nonzero(self._labels[0] != ignore_index).flatten()
        return self._labelled[ignore_index]

    def sample(self, n: int, generator: torch.Generator, ignore_index: int
               ) -> tuple[Tensor, Tensor, Tensor]:
        """(image, y, x) of n labelled pixels drawn uniformly with replacement."""
        pool = self.labelled_pixels(ignore_index)
        if not pool.numel():
            raise ValueError("the bank has no labelled pixels")
        pick = torch.randint(0, pool.numel(), (n,), generator=generator)
        return self.locate(pool[pick.to(pool.device)])

    def locate(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(image, y, x) of global flat pixel indices."""
        meta = self._index()
        flat = flat.to(self._storage)
        img = torch.searchsorted(meta["pix_off"], flat, right=True) - 1
        local = flat - meta["pix_off"][img]
        width = meta["W"][img]
        return img, torch.div(local, width, rounding_mode="floor"), local % width

    def gather_flat(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """Features (*flat.shape, dim) and labels (*flat.shape) of global flat pixel indices."""
        return self.take(self.stage(flat))


def _staged_tensors(staged: Staged) -> Iterator[Tensor]:
    yield staged.labels
    yield staged.scale
    for groups in staged.parts or []:
        for rows, weights in groups:
            yield from rows
            yield from weights
