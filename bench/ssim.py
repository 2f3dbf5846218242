"""SSIM as a per-pixel loss, computed as torchgeometry 0.1.2's `losses.SSIM(window, reduction="mean")`.

That is the loss MDM's official code trains with (`tgm.losses.SSIM(5, reduction='mean')`,
torchgeometry pinned at 0.1.2 in its environment): a gaussian window (sigma 1.5) slid over the
image with ZERO padding of (window - 1) // 2, so the SSIM map has the image's size and the
border windows average in zeros; C1 = (0.01 max_val)^2, C2 = (0.03 max_val)^2 with max_val 1;
the per-pixel loss clamp(1 - ssim, 0, 1) / 2 (the clamp binds before the halving: a pixel whose
SSIM is negative scores 1/2 and passes no gradient); the mean over batch, channels and pixels.
MDM applies it to images in [-1, 1] as they are, so max_val 1 is half their dynamic range.

bench.diffusion's `pytorch_msssim` variant differs in all three respects: it rescales to [0, 1],
scores only windows that fit inside the image ('valid'), and averages SSIM before the (1 - .) / 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 5
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """The size x size window: the outer product of a normalised 1-D gaussian centred on size // 2."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the SSIM window must be an odd positive size, got {size}")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = WINDOW, sigma: float = SIGMA,
             max_val: float = 1.0) -> torch.Tensor:
    """The B x C x H x W map of local SSIM (per channel), zero padding (window - 1) // 2, in float32."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two B x C x H x W tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    with torch.autocast(a.device.type, enabled=False):  # E[x^2] - E[x]^2 needs float32
        a, b = a.float(), b.float()
        c = a.shape[1]
        kernel = gaussian_window(window, sigma).to(a.device, torch.float32).expand(c, 1, window, window)

        def blur(z: torch.Tensor) -> torch.Tensor:
            return F.conv2d(z, kernel, padding=(window - 1) // 2, groups=c)

        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a**2
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        c1, c2 = (K1 * max_val) ** 2, (K2 * max_val) ** 2
        return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim_loss_torchgeometry(pred: torch.Tensor, target: torch.Tensor, window: int = WINDOW,
                            sigma: float = SIGMA, max_val: float = 1.0) -> torch.Tensor:
    """mean(clamp(1 - SSIM map, 0, 1) / 2): torchgeometry 0.1.2's SSIM loss with reduction 'mean'."""
    return (torch.clamp(1 - ssim_map(pred, target, window, sigma, max_val), 0, 1) / 2).mean()
