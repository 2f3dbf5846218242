"""MDM's corruption, loss and feature geometry (REFERENCE §3)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from bench import registry
from bench.diffusion import ssim_loss
from bench.nn.gd_config import decoder_block_channels
from bench.nn.masking import mask_patches, patch_keep_mask, visible_count

GD_JSON = Path(__file__).resolve().parents[2] / "shared/reference/guided_diffusion_checkpoints.json"


@pytest.mark.parametrize("patch", [4, 8, 16])
@pytest.mark.parametrize("t", [0, 1, 250, 500, 999])
def test_exactly_int_L_times_one_minus_ratio_patches_stay_visible(patch: int, t: int) -> None:
    gen = torch.Generator().manual_seed(t)
    x = torch.rand(3, 3, 64, 64) * 2 - 1 + 3  # strictly positive so masked pixels are exactly 0
    out = mask_patches(x, torch.full((3,), t), 1000, patch, gen)
    L = (64 // patch) ** 2
    per_patch = out.abs().sum(1).unfold(1, patch, patch).unfold(2, patch, patch)  # B x gh x gw x p x p
    visible = (per_patch.flatten(3) > 0).all(-1).sum((1, 2))
    assert visible.tolist() == [visible_count(L, t / 1000)] * 3 == [int(L * (1 - t / 1000))] * 3
    masked = (per_patch.flatten(3) == 0).all(-1).sum((1, 2))
    assert (visible + masked == L).all()  # whole patches only


def test_masks_differ_between_samples_and_need_divisible_sizes() -> None:
    keep = patch_keep_mask(2, (32, 32), 8, torch.tensor([0.5, 0.5]), torch.Generator().manual_seed(0))
    assert not torch.equal(keep[0], keep[1])
    with pytest.raises(ValueError, match="not divisible"):
        patch_keep_mask(1, (30, 32), 8, torch.tensor([0.5]), torch.Generator())


def _ssim_same_window(a: np.ndarray, b: np.ndarray, size: int = 5, sigma: float = 1.5) -> float:
    """SSIM with a size x size gaussian window (sigma 1.5), 'valid' positions only (Wang et al.)."""
    from scipy.ndimage import correlate

    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    k = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda z: correlate(z, k, mode="reflect")[size // 2 : -(size // 2), size // 2 : -(size // 2)]
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim.mean())


def test_ssim_loss_agrees_with_scikit_image() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((48, 48))
    b = np.clip(a + 0.2 * rng.standard_normal((48, 48)), 0, 1)
    # ssim_loss takes images in [-1, 1] and returns (1 - SSIM) / 2.
    ours = 1 - 2 * ssim_loss(torch.tensor(a * 2 - 1)[None, None].float(),
                             torch.tensor(b * 2 - 1)[None, None].float()).item()
    assert abs(ours - _ssim_same_window(a, b)) < 1e-4  # the same 5-tap, sigma-1.5 window
    # scikit-image always truncates its gaussian at 3.5 sigma (11 taps for sigma 1.5) and only
    # crops win_size // 2 = 2 border pixels, so it can agree closely but not exactly.
    ref = structural_similarity(a, b, win_size=5, gaussian_weights=True, sigma=1.5, data_range=1.0,
                                use_sample_covariance=False)
    assert abs(ours - ref) < 5e-3


def test_paper_feature_dims_medical_and_natural() -> None:
    cls = registry.get("mdm")
    plugin = cls(cls.presets["paper"])
    channels = decoder_block_channels(plugin.gd_config())
    assert sum(channels[i] for i in plugin.cfg.blocks_medical) == 1728
    assert sum(channels[i] for i in plugin.cfg.blocks_natural) == 3264
    ddpm = registry.get("ddpm")
    nat = ddpm.presets["paper"]
    ffhq = ddpm(ddpm.resolve_config("paper", {"model_channels": 256}))
    ch = decoder_block_channels(ffhq.gd_config())
    assert sum(ch[i] for i in nat.blocks_natural) * len(nat.timesteps_natural) == 8448


@pytest.mark.skipif(not GD_JSON.exists(), reason="../shared/reference is not beside this checkout")
def test_paper_models_have_the_published_parameter_counts() -> None:
    published = json.loads(GD_JSON.read_text())
    assert registry.get("mdm").param_count() == published["mdm_medical256"]["params"]
    assert registry.get("ddpm").param_count() == published["ddpm_medical256"]["params"]


def test_extraction_mask_is_the_same_for_every_window() -> None:
    cls = registry.get("mdm")
    plugin = cls(cls.presets["tiny"])
    x = torch.ones(3, 3, 64, 64)
    out = plugin.model_input(x, 500, torch.zeros_like(x))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert 0.4 < (out[0, 0] == 0).float().mean() < 0.6
