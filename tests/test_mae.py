"""MAE (REFERENCE §5): MAE's masking, a loss on hidden patches only, the read-out geometry, a tiny run."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.errors import FieldError
from bench.nn.mae_vit import MAEArch, MAEViT, masked_patch_loss, masked_reconstruction, random_masking
from methods.mae import MAE, MAEConfig

SMALL = MAEArch(img_size=32, patch=8, embed_dim=32, depth=3, heads=2, decoder_dim=16, decoder_depth=1,
                decoder_heads=2)


@pytest.mark.parametrize("length", [16, 63, 1024])
def test_exactly_int_L_quarter_patches_stay_visible_per_sample(length: int) -> None:
    kept, restore, mask = random_masking(5, length, 0.75, torch.Generator().manual_seed(length))
    visible = int(length * (1 - 0.75))
    assert kept.shape == (5, visible)
    assert (mask.sum(1) == length - visible).all()
    assert all(mask[b, kept[b]].sum() == 0 for b in range(5))  # the kept patches are the visible ones
    assert len({tuple(m.tolist()) for m in mask}) > 1  # a fresh shuffle per sample


def test_encoder_sees_only_the_visible_patches() -> None:
    model = MAEViT(SMALL)
    latent, _, mask = model.encode(torch.randn(3, 3, 32, 32), 0.75, torch.Generator().manual_seed(0))
    assert latent.shape[1] == 1 + int(16 * 0.25)  # cls + visible tokens
    assert (mask.sum(1) == 12).all()


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_ignores_predictions_for_visible_patches(norm_pix: bool) -> None:
    model = MAEViT(SMALL)
    images = torch.randn(2, 3, 32, 32)
    pred, mask = model(images, 0.75, torch.Generator().manual_seed(1))
    pred = pred.detach()
    base = masked_patch_loss(model, images, pred, mask, norm_pix)
    visible, hidden = mask == 0, mask == 1
    assert torch.allclose(masked_patch_loss(model, images, pred + 5 * visible.unsqueeze(-1), mask, norm_pix), base)
    assert not torch.allclose(masked_patch_loss(model, images, pred + 5 * hidden.unsqueeze(-1), mask, norm_pix), base)


def test_ssim_variant_reconstructs_hidden_patches_only() -> None:
    model = MAEViT(SMALL)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    _, mask = model(x, 0.75, torch.Generator().manual_seed(2))
    junk = torch.full((2, 16, 8 * 8 * 3), 0.5)
    out = model.patchify(masked_reconstruction(model, x, junk, mask))
    assert torch.equal(out[mask == 0], model.patchify(x)[mask == 0])
    assert (out[mask == 1] == 0.5).all()
    cfg = dataclasses.replace(MAE.presets["tiny"], loss="ssim")
    loss = MAE(cfg).step_loss(MAEViT(MAE(cfg).arch()), torch.rand(2, 3, 64, 64) * 2 - 1, torch.Generator())
    assert 0 < loss.item() < 1


def test_patchify_round_trips_in_row_major_order() -> None:
    model = MAEViT(SMALL)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.unpatchify(model.patchify(x)), x)
    # patch 1 is the top row's second patch
    assert torch.equal(model.patchify(x)[:, 1].view(2, 8, 8, 3).permute(0, 3, 1, 2), x[:, :, :8, 8:16])


def test_features_are_the_unmasked_encoder_in_grid_order() -> None:
    model = MAEViT(SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model.features(x, 2)
        latent, restore, _ = model.encode(x, 0.0, torch.Generator().manual_seed(3))
    assert [m.shape for m in maps] == [torch.Size([2, 32, 4, 4])] * 2
    ordered = torch.gather(latent[:, 1:], 1, restore.unsqueeze(-1).expand(-1, -1, 32))
    last = model.norm(maps[-1].flatten(2).transpose(1, 2))
    assert torch.allclose(last, ordered, atol=1e-5)


def test_paper_model_gives_12288_dims_on_a_32x32_grid() -> None:
    method = MAE(MAE.presets["paper"])
    with torch.device("meta"):
        model = method.build_model()
        maps = method.extract(model, torch.rand(1, 3, 256, 256), "medical")
    assert len(maps) == 12 and all(m.shape[1:] == (1024, 32, 32) for m in maps)
    assert sum(m.shape[1] for m in maps) == 12288
    cfg = MAE.presets["paper"]
    assert (cfg.patch, cfg.embed_dim, cfg.depth, cfg.heads, cfg.mask_ratio) == (8, 1024, 24, 16, 0.75)
    assert (cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.loss) == (512, 8, 16, "norm_pix")
    encoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("decoder", "mask")))
    assert 300e6 < encoder < 305e6  # ViT-L


def test_bad_settings_fail_before_pretraining() -> None:
    with pytest.raises(FieldError, match="window"):
        dataclasses.replace(MAE.presets["tiny"], window=60)
    with pytest.raises(FieldError, match="loss"):
        dataclasses.replace(MAE.presets["tiny"], loss="l1")


def test_bad_recipe_settings_fail_before_pretraining() -> None:
    for field, value in (("crop_scale", (0.0, 1.0)), ("crop_scale", (0.8, 0.5)), ("warmup_fraction", 1.0)):
        with pytest.raises(FieldError, match=field):
            dataclasses.replace(MAE.presets["tiny"], **{field: value})


def test_maes_recipe_is_the_paper_presets_and_the_official_protocols() -> None:
    small = MAE.resolve_config("small", {})
    assert (small.crop_scale, small.lr_schedule, small.decay_exclusions) == (None, "constant", False)  # the records'
    for cfg in (MAE.resolve_config("small", {"protocol": "official"}), MAE.resolve_config("paper", {}),
                MAE.resolve_config("paper", {"protocol": "converged"})):
        assert cfg.crop_scale == (0.2, 1.0) and cfg.lr_schedule == "warmup_cosine" and cfg.decay_exclusions
        assert cfg.betas == (0.9, 0.95) and cfg.weight_decay == 0.05
        ((_, sched),) = MAE(cfg).schedules().items()
        assert sched.crop_scale == (0.2, 1.0) and sched.decay_exclusions
        assert sched.warmup_steps == round(0.02 * cfg.train_steps) and sched.lr == cfg.lr
    assert MAE.resolve_config("paper", {}).protocol == "official"
    with pytest.raises(FieldError, match="official"):
        MAE.resolve_config("small", {"protocol": "official", "lr_schedule": "constant"})
    plain = MAE(small).schedules()["mae pretrain"]  # the plain loop: nothing of the recipe reaches it
    assert (plain.crop_scale, plain.lr_schedule, plain.decay_exclusions) == (None, "constant", False)


def test_probe_only_fields_do_not_retrain() -> None:
    tiny = MAE.presets["tiny"]
    same = MAE(dataclasses.replace(tiny, feature_blocks=2, probe_ensemble=2)).pretrain_identity()
    assert same == MAE(tiny).pretrain_identity()
    assert MAE(dataclasses.replace(tiny, mask_ratio=0.5)).pretrain_identity() != same
    assert isinstance(tiny, MAEConfig)


@pytest.mark.slow
@pytest.mark.plugins("mae")
def test_tiny_preset_runs_end_to_end(tiny_records: dict[str, dict]) -> None:
    record = tiny_records["mae"]
    assert record["method"] == "mae" and record["extra"]["feature_dim"] == 3 * 48
    assert record["metrics"]["dice"] > 0.5, record["metrics"]
