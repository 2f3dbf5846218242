"""SwAV's multi-crop augmentation, batched: random resized crops plus colour distortion and blur.

Every crop of one size is produced by one `roi_align` call and per-sample factors broadcast over
the batch, so the augmentation costs a handful of kernels per step instead of hundreds of
per-image calls. Randomness comes from an explicit generator, so pre-training is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

LUMA = (0.299, 0.587, 0.114)
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@dataclass(frozen=True)
class CropSpec:
    """`count` crops of `size` px covering a random `scale` fraction of the source's area."""

    count: int
    size: int
    scale: tuple[float, float]


@dataclass(frozen=True)
class Distortion:
    """SwAV's colour distortion (strength s: jitter 0.8s, 0.8s, 0.8s, 0.2s) and Gaussian blur."""

    strength: float = 1.0
    jitter_prob: float = 0.8
    gray_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def crop_boxes(n: int, side: int, scale: tuple[float, float], ratio: tuple[float, float],
               gen: torch.Generator) -> torch.Tensor:
    """n x 4 boxes (x0, y0, x1, y1) of RandomResizedCrop on a side x side source, clamped to fit."""
    area = _uniform(n, *scale, gen) * side * side
    aspect = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), gen).exp()
    w = (area * aspect).sqrt().clamp(1, side)
    h = (area / aspect).sqrt().clamp(1, side)
    x0 = torch.rand(n, generator=gen) * (side - w)
    y0 = torch.rand(n, generator=gen) * (side - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def resized_crops(x: torch.Tensor, spec: CropSpec, dist: Distortion, gen: torch.Generator) -> torch.Tensor:
    """(count * B) x 3 x size x size crops of x (B x 3 x S x S), crop-major order, flipped at random."""
    b, side = x.shape[0], x.shape[-1]
    boxes = crop_boxes(spec.count * b, side, spec.scale, dist.ratio, gen)
    index = torch.arange(b, dtype=boxes.dtype).repeat(spec.count).unsqueeze(1)
    rois = torch.cat([index, boxes], dim=1).to(device=x.device, dtype=x.dtype)
    out = roi_align(x, rois, (spec.size, spec.size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    flip = (torch.rand(len(out), generator=gen) < dist.hflip_prob).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, out.flip(-1), out)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Hue rotation by `turns` of a full circle, as a rotation of the chroma plane in YIQ."""
    to_yiq = torch.tensor(RGB_TO_YIQ, device=x.device, dtype=x.dtype)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    cos, sin = torch.cos(2 * math.pi * turns).view(-1, 1, 1), torch.sin(2 * math.pi * turns).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


def colour_distort(x: torch.Tensor, dist: Distortion, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, hue jitter (with prob. jitter_prob), then grayscale; x in [0, 1]."""
    n, s = len(x), dist.strength

    def factor(spread: float) -> torch.Tensor:
        return _uniform(n, max(0.0, 1 - spread), 1 + spread, gen).to(x.device, x.dtype).view(-1, 1, 1, 1)

    on = (torch.rand(n, generator=gen) < dist.jitter_prob).to(x.device).view(-1, 1, 1, 1)
    brightness, contrast, saturation = factor(0.8 * s), factor(0.8 * s), factor(0.8 * s)
    hue = _uniform(n, -0.2 * s, 0.2 * s, gen).to(x.device, x.dtype)
    y = (x * brightness).clamp(0, 1)
    y = ((y - _gray(y).mean((2, 3), keepdim=True)) * contrast + _gray(y).mean((2, 3), keepdim=True)).clamp(0, 1)
    y = ((y - _gray(y)) * saturation + _gray(y)).clamp(0, 1)
    y = _rotate_hue(y, hue).clamp(0, 1)
    x = torch.where(on, y, x)
    gray = (torch.rand(n, generator=gen) < dist.gray_prob).to(x.device).view(-1, 1, 1, 1)
    return torch.where(gray, _gray(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, dist: Distortion, gen: torch.Generator) -> torch.Tensor:
    """Blur each image with probability blur_prob and its own sigma (one grouped separable conv)."""
    n, c, h, w = x.shape
    sigma = _uniform(n, *dist.blur_sigma, gen)
    sigma = torch.where(torch.rand(n, generator=gen) < dist.blur_prob, sigma, torch.zeros(n))
    radius = max(1, min(int(math.ceil(3 * dist.blur_sigma[1])), (min(h, w) - 1) // 2))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets.view(1, -1) ** 2 / (2 * sigma.clamp_min(1e-6).view(-1, 1) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # sigma 0 -> a delta (no blur)
    kernel = kernel.repeat_interleave(c, 0).to(x.device, x.dtype)
    flat = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def multi_crop(x01: torch.Tensor, specs: tuple[CropSpec, ...], dist: Distortion, gen: torch.Generator
               ) -> list[torch.Tensor]:
    """One (count * B) x 3 x size x size batch per CropSpec, augmented, values in [0, 1]."""
    out = []
    for spec in specs:
        crops = resized_crops(x01, spec, dist, gen)
        out.append(gaussian_blur(colour_distort(crops, dist, gen), dist, gen).clamp(0, 1))
    return out
