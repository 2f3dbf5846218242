"""Figure 6: k-means (k = 5) of the frozen features of every decoder block, DDPM against MDM.

The paper shows what each decoder block of the pre-trained UNet "sees" by clustering its pixel
features. Here the backbones are the very artefacts the probe runs pre-train (`runs()` asks for
one fraction-1.0, seed-0 run per method, so the harness builds or reuses them and the probe's
score comes along for the row labels); `write()` loads them, reads every decoder block of a few
test images at the method's own feature timestep (the same corruption and hooks as the probe),
clusters each block's features per image and draws the grid. The cluster maps are also saved
(clusters.npz) so they can be checked or redrawn without a backbone.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2

from bench.context import RunContext
from bench.data import get_dataset
from bench.data.scale import scale_floor
from bench.data.types import Sample
from bench.device import autocast, pick_device, prepare_batch
from bench.diffusion_probe import DiffusionProbe
from bench.errors import BenchError
from bench.experiments.base import Experiment, ExperimentContext, Variant, experiment, medical_datasets
from bench.experiments.figures import palette, save_figure
from bench.experiments.tables import method_label
from bench.imaging import resize_image, resize_labels, target_size, to_tensor
from bench.nn.gd_unet import GDUNet
from bench.runner import RunSpec
from bench.thumbnails import spread_indices
from bench.windows import pad_to_window

FLAT = 1e-6  # relative spread below which a block's features count as constant (interpolation noise)


@dataclass(frozen=True)
class Fig6Config:
    """What the figure shows; `blocks=None` means every decoder block of the backbone."""

    methods: tuple[str, ...] = ("ddpm", "mdm")
    images: int = 3                       # test images, evenly spaced over the test split
    k: int = 5                            # clusters per block per image (the paper's k)
    kmeans_iter: int = 20
    kmeans_seed: int = 0
    cluster_min_side: int = 64            # coarse blocks are clustered at this side (see cluster_map)
    blocks: tuple[int, ...] | None = None
    fraction: float = 1.0                 # the probe run that comes along (its score labels the row)
    seed: int = 0
    panel_inches: float = 1.4


PRESETS: dict[str, Fig6Config] = {"tiny": Fig6Config(images=2), "small": Fig6Config(images=3),
                                   "paper": Fig6Config(images=3)}


def window_crop(sample: Sample, max_side: int | None, window: int, floor: float = 0.0) -> torch.Tensor:
    """1 x 3 x w x w in [0, 1]: the centre window of the probe's working copy of the image.

    The backbone was trained on, and is read out through, window-sized crops of that copy; the
    centre window is what one probe window of the image looks like, without resizing artefacts.
    """
    x = resize_image(to_tensor(sample.image), target_size(sample.image.shape[:2], max_side, floor))
    x = pad_to_window(x, window)
    top, left = (x.shape[-2] - window) // 2, (x.shape[-1] - window) // 2
    return x[..., top : top + window, left : left + window]


def cluster_map(feature: torch.Tensor, size: int, k: int, iters: int, seed: int,
                min_side: int | None = None) -> np.ndarray:
    """C x h x w features -> size x size cluster labels, 0 = the largest cluster.

    Features are upsampled bilinearly, as the probe sees them, to `size` (the window), or only
    to max(h, min_side) when that is smaller: an 8 px block of 768 channels upsampled to 256 px
    is 65,536 interpolated points that cost ~30 s of k-means and add no detail; the labels are
    then brought to `size` by nearest neighbour. Labels are renumbered by cluster size so
    colours mean roughly the same thing across blocks.
    """
    side = size if min_side is None else min(size, max(int(feature.shape[-1]), min_side))
    up = F.interpolate(feature[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0]
    data = np.ascontiguousarray(up.reshape(up.shape[0], -1).T.numpy())  # float32: half the memory
    spread = float(np.ptp(data, axis=0).max())
    if spread <= FLAT * max(1.0, float(np.abs(data).max())):  # constant features: one cluster
        return np.zeros((size, size), np.uint8)
    _, labels = kmeans2(data, k, iter=iters, minit="++", rng=np.random.default_rng(seed), missing="warn")
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    return resize_labels(rank[labels].reshape(side, side), (size, size)).astype(np.uint8)


def block_features(spec: RunSpec, crops: torch.Tensor, domain: str,
                   blocks: tuple[int, ...] | None) -> tuple[list[int], int, list[torch.Tensor]]:
    """(blocks, timestep, maps) of the method's pre-trained backbone for a batch of windows.

    The plugin is rebuilt with its read-out set to the wanted blocks at its first feature
    timestep, so the corruption, noise seed and hooks are exactly the probe's.
    """
    plugin = spec.plugin()
    if not isinstance(plugin, DiffusionProbe):
        raise BenchError(f"{spec.method}: fig6 needs a guided-diffusion UNet backbone (output_blocks)")
    device = pick_device()
    backbone, _, _ = plugin.backbone(RunContext(spec=spec, device=device))
    if not isinstance(backbone, GDUNet):
        raise BenchError(f"{spec.method}: fig6 needs a guided-diffusion UNet backbone (output_blocks)")
    _, timesteps = plugin.blocks_and_timesteps(domain)
    every = tuple(range(len(backbone.output_blocks)))
    chosen = every if blocks is None else tuple(b for b in blocks if b in every)
    cfg = dataclasses.replace(plugin.cfg, blocks_medical=chosen, blocks_natural=chosen,
                              timesteps_medical=(timesteps[0],), timesteps_natural=(timesteps[0],))
    reader = type(plugin)(cfg)
    with torch.no_grad(), autocast(device):
        maps = reader.extract(backbone, prepare_batch(crops, device), domain)
    return list(chosen), timesteps[0], [m.float().cpu() for m in maps]


@experiment
class Fig6(Experiment):
    name = "fig6"
    title = "Figure 6: k-means (k=5) of frozen decoder-block features, DDPM vs MDM"

    def config(self, ctx: ExperimentContext) -> Fig6Config:
        return PRESETS[ctx.sweep.preset]

    def specs(self, ctx: ExperimentContext) -> list[RunSpec]:
        cfg = self.config(ctx)
        dataset = medical_datasets(ctx, ("glas",), "fig6")[0]
        return [s for m in cfg.methods
                for s in ctx.specs(Variant(m, m), dataset, cfg.fraction, seeds=(cfg.seed,))]

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        return self.specs(ctx)

    def write(self, ctx: ExperimentContext) -> list[Path]:
        cfg = self.config(ctx)
        specs = [s for s in self.specs(ctx) if self._usable(ctx, s)]
        if not specs:
            return []
        test = get_dataset(specs[0].dataset, specs[0].root, "test")
        samples = [test[i] for i in spread_indices(len(test), cfg.images)]
        rows: list[dict[str, Any]] = []
        maps: dict[str, np.ndarray] = {}
        for spec in specs:
            pcfg = spec.resolved_config()
            floor = scale_floor(spec.dataset, spec.root)
            crops = torch.cat([window_crop(s, pcfg.max_side, pcfg.window, floor) for s in samples])
            blocks, t, feats = block_features(spec, crops, test.domain, cfg.blocks)
            score = _probe_score(ctx, spec)
            for j, sample in enumerate(samples):
                clusters = [cluster_map(f[j], pcfg.window, cfg.k, cfg.kmeans_iter, cfg.kmeans_seed,
                                        cfg.cluster_min_side) for f in feats]
                for b, c in zip(blocks, clusters):
                    maps[f"{spec.method}__{sample.name}__block{b}"] = c
                rows.append({"method": spec.method, "image": sample.name, "t": t, "score": score,
                             "crop": crops[j].permute(1, 2, 0).numpy(), "blocks": blocks, "clusters": clusters,
                             "channels": [int(f.shape[1]) for f in feats], "sides": [int(f.shape[-1]) for f in feats]})
        rows.sort(key=lambda r: (r["image"], cfg.methods.index(r["method"])))
        npz = ctx.path("clusters.npz")
        # numpy's stub lets **kwds bind its allow_pickle flag; these keys are method__image__blockN
        np.savez_compressed(npz, **maps)  # type: ignore[arg-type]
        return [*save_figure(_grid(rows, cfg, test.name, ctx.notes), ctx, "fig6"), npz]

    @staticmethod
    def _usable(ctx: ExperimentContext, spec: RunSpec) -> bool:
        artefact = spec.artefact()
        if artefact is None or artefact.exists():
            return True
        ctx.note(f"{spec.method}: no pre-trained artefact at {artefact} (its run failed?); row left out")
        return False


def _probe_score(ctx: ExperimentContext, spec: RunSpec) -> str:
    records = ctx.records([spec])
    if not records:
        return ""
    dice = records[0]["metrics"].get("dice")
    return "" if dice is None else f"probe Dice {100 * dice:.1f}"


def _grid(rows: list[dict[str, Any]], cfg: Fig6Config, dataset: str, notes: list[str]):
    """Rows = image x method; columns = the window, then one cluster map per decoder block."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: the user's backend stays untouched

    cols = 1 + max(len(r["blocks"]) for r in rows)
    fig = Figure(figsize=(cfg.panel_inches * cols, cfg.panel_inches * len(rows) + 0.6))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    cmap = ListedColormap(palette("tab10")[: cfg.k])
    for i, row in enumerate(rows):
        axes[i][0].imshow(np.clip(row["crop"], 0, 1))
        label = f"{method_label(row['method'])} t={row['t']}\n{row['image']}"
        axes[i][0].set_ylabel(label + (f"\n{row['score']}" if row["score"] else ""), fontsize=7)
        for j, (b, c) in enumerate(zip(row["blocks"], row["clusters"]), start=1):
            axes[i][j].imshow(c, cmap=cmap, vmin=0, vmax=cfg.k - 1, interpolation="nearest")
            if i == 0:
                axes[i][j].set_title(f"block {b}\n{row['channels'][j - 1]}ch {row['sides'][j - 1]}px", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[i][len(row["blocks"]) + 1 :]:
            ax.axis("off")
    axes[0][0].set_title("input window", fontsize=7)
    title = f"k-means (k={cfg.k}) of frozen decoder features, {dataset}"
    fig.suptitle("\n".join([title, *notes]), fontsize=8)
    fig.tight_layout()
    return fig
