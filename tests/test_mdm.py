"""MDM's corruption, loss and feature geometry (REFERENCE §3)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from bench import registry
from bench.diffusion import reconstruction_loss, ssim_loss
from bench.nn.gd_config import decoder_block_channels
from bench.nn.masking import mask_patches, patch_keep_mask, visible_count
from bench.ssim import gaussian_window, ssim_loss_torchgeometry, ssim_map

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


def _torchgeometry_by_windows(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchgeometry's SSIM(5) restated window by window in float64: for every pixel, the 5 x 5
    neighbours weighted by a sigma-1.5 gaussian, a neighbour outside the image counting as 0
    (zero padding 2); C1 = 0.01^2, C2 = 0.03^2 (max_val 1); per-pixel loss clamp(1 - SSIM, 0, 1) / 2."""
    g = [math.exp(-((k - 2) ** 2) / (2 * 1.5**2)) for k in range(5)]
    g = [v / sum(g) for v in g]
    a, b = a.double(), b.double()
    out = torch.zeros_like(a)
    _, _, h, w = a.shape
    for i in range(h):
        for j in range(w):
            mu_a = mu_b = e_aa = e_bb = e_ab = torch.zeros(a.shape[:2], dtype=torch.float64)
            for di in range(5):
                for dj in range(5):
                    y, x = i + di - 2, j + dj - 2
                    if not (0 <= y < h and 0 <= x < w):
                        continue  # zero padding: the neighbour adds 0 to every sum
                    wt = g[di] * g[dj]
                    pa, pb = a[:, :, y, x], b[:, :, y, x]
                    mu_a, mu_b = mu_a + wt * pa, mu_b + wt * pb
                    e_aa, e_bb, e_ab = e_aa + wt * pa * pa, e_bb + wt * pb * pb, e_ab + wt * pa * pb
            var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
            c1, c2 = 0.01**2, 0.03**2
            out[:, :, i, j] = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return out, (torch.clamp(1 - out, 0, 1) / 2).mean()


@pytest.mark.parametrize("case", ["noisy", "anticorrelated", "offset"])
def test_torchgeometry_ssim_equals_the_formula_window_by_window(case: str) -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 7, 9, generator=gen) * 2 - 1  # images in [-1, 1], used as they are
    b = {"noisy": (a + 0.3 * torch.randn(a.shape, generator=gen)).clamp(-1, 1),
         "anticorrelated": -a,              # SSIM < 0 at many pixels: the clamp binds there
         "offset": (a * 0.5 + 0.4)}[case]  # means differ: the luminance term and the padded borders matter
    want_map, want_loss = _torchgeometry_by_windows(a, b)
    got_map = ssim_map(a, b)
    assert got_map.shape == a.shape  # zero padding: one value per pixel, borders included
    assert torch.allclose(got_map.double(), want_map, atol=1e-5)
    assert abs(ssim_loss_torchgeometry(a, b).item() - want_loss.item()) < 1e-6
    assert abs(reconstruction_loss("ssim", a, b, "torchgeometry").item() - want_loss.item()) < 1e-6
    if case == "anticorrelated":
        assert (want_map < 0).any()
        per_pixel = torch.clamp(1 - ssim_map(a, b), 0, 1) / 2
        assert torch.all(per_pixel[want_map < 0] == 0.5)  # clamp(1 - s, 0, 1) / 2, not clamp((1 - s) / 2)


def test_torchgeometry_window_is_its_published_kernel() -> None:
    # torchgeometry 0.1.2's docstring: get_gaussian_kernel(5, 1.5) = [0.1201, 0.2339, 0.2921, 0.2339, 0.1201]
    k = gaussian_window(5, 1.5)
    assert torch.allclose(k.sum(1), torch.tensor([0.1201, 0.2339, 0.2921, 0.2339, 0.1201], dtype=torch.float64),
                          atol=1e-4)
    assert torch.allclose(k, torch.outer(k.sum(1), k.sum(0))) and abs(k.sum().item() - 1) < 1e-12
    with pytest.raises(ValueError, match="odd"):
        gaussian_window(4, 1.5)


def test_the_two_ssims_differ_and_presets_choose_them() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    b = (a + 0.5 * torch.randn(a.shape, generator=gen)).clamp(-1, 1)
    assert abs(ssim_loss(a, b).item() - ssim_loss(a, b, kind="torchgeometry").item()) > 1e-3
    cls = registry.get("mdm")
    assert cls.resolve_config("small", {}).ssim == "pytorch_msssim"  # the committed records' loss
    assert cls.resolve_config("small", {"protocol": "official"}).ssim == "torchgeometry"
    assert cls.resolve_config("paper", {}).protocol == "official"
    assert cls.resolve_config("paper", {"protocol": "converged"}).ssim == "torchgeometry"


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
