"""MaskDM (REFERENCE §7): block-wise masking, dropped tokens, the visible-patch loss, U-ViT size,
the two training stages, and a real run on the tiny preset."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from bench import registry
from bench.context import RunContext
from bench.errors import FieldError
from bench.nn.uvit import UViT, UViTArch, block_keep_indices, keep_pixel_mask, visible_mse

SMALL = UViTArch(img_size=32, patch=4, embed_dim=32, depth=4, heads=4)  # an 8 x 8 patch grid


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The machine's 2 cores are shared; one thread keeps these tests predictable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _plugin(**overrides: object):  # type: ignore[no-untyped-def]
    cls = registry.get("maskdm")
    return cls(replace(cls.presets["tiny"], **overrides))


@pytest.mark.parametrize("grid,block,ratio", [(16, 2, 0.9), (16, 4, 0.9), (8, 2, 0.5), (64, 4, 0.9), (8, 1, 0.75)])
def test_block_masking_keeps_exactly_the_intended_whole_blocks(grid: int, block: int, ratio: float) -> None:
    keep = block_keep_indices(3, grid, block, ratio, torch.Generator().manual_seed(0))
    blocks = (grid // block) ** 2
    expected = max(1, int(blocks * (1 - ratio))) * block**2
    assert keep.shape == (3, expected)
    for row in keep:
        assert len(set(row.tolist())) == expected and row.tolist() == sorted(row.tolist())
        kept = torch.zeros(grid * grid)
        kept[row] = 1
        per_block = kept.view(grid // block, block, grid // block, block).sum((1, 3))
        assert set(per_block.flatten().tolist()) <= {0.0, float(block**2)}  # whole blocks only
    assert not torch.equal(keep[0], keep[1])  # a fresh mask per sample


def test_paper_masking_drops_90_percent_of_4x4_blocks() -> None:
    cfg = registry.get("maskdm").presets["paper"]
    grid = cfg.window // cfg.patch
    keep = block_keep_indices(1, grid, cfg.mask_block, cfg.mask_ratio, torch.Generator())
    assert (grid, cfg.mask_block, keep.shape[1]) == (64, 4, int(256 * 0.1) * 16)  # 25 of 256 blocks


def test_dropped_tokens_never_reach_the_transformer() -> None:
    model = UViT(SMALL).eval()
    keep = block_keep_indices(2, SMALL.grid, 2, 0.75, torch.Generator().manual_seed(1))
    lengths: list[int] = []
    blocks = [*model.in_blocks, model.mid_block, *model.out_blocks]
    handles = [b.register_forward_pre_hook(lambda _m, args: lengths.append(args[0].shape[1])) for b in blocks]
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 500])
    with torch.no_grad():
        model(x, t, keep)
        assert lengths == [1 + keep.shape[1]] * len(blocks) == [1 + 16] * len(blocks)
        lengths.clear()
        model(x, t)
        assert lengths == [1 + SMALL.num_patches] * len(blocks)
    for h in handles:
        h.remove()


def test_loss_ignores_masked_patches_entirely() -> None:
    torch.manual_seed(0)
    model = UViT(SMALL).eval()
    keep = block_keep_indices(2, SMALL.grid, 2, 0.75, torch.Generator().manual_seed(2))
    pixels = keep_pixel_mask(keep, SMALL.grid, SMALL.patch)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 700])
    # The input of dropped patches has no influence on the prediction at all ...
    with torch.no_grad():
        pred = model(x, t, keep)
        assert torch.equal(pred, model(x + 5 * torch.randn_like(x) * (1 - pixels), t, keep))
    # ... and predictions (or targets) on dropped patches do not enter the loss ...
    target = torch.randn_like(x)
    base = visible_mse(pred, target, pixels)
    assert torch.allclose(base, visible_mse(pred + 9 * (1 - pixels), target - 3 * (1 - pixels), pixels))
    # ... while the kept patches do, averaged over exactly their pixels.
    assert not torch.allclose(base, visible_mse(pred + 0.1 * pixels, target, pixels))
    manual = ((pred - target) ** 2)[pixels.expand_as(pred).bool()].mean()
    assert torch.allclose(base, manual)


def test_paper_parameter_count_matches_arithmetic() -> None:
    n = registry.get("maskdm").param_count()
    d, p, tokens, blocks, skips = 768, 4, (256 // 4) ** 2 + 1, 13, 6
    block = 2 * d + 3 * d * d + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)  # norms, qkv, proj, mlp
    expected = (blocks * block + skips * (2 * d * d + d)          # transformer + long-skip linears
                + (3 * p * p * d + d) + tokens * d                  # patch embedding conv + positions
                + 2 * d + (d * 3 * p * p + 3 * p * p)               # final norm + linear to patch pixels
                + (3 * 3 * 9 + 3))                                  # 3x3 conv
    print(f"maskdm paper U-ViT: {n:,} parameters")
    assert n == expected == 102_417_540


def test_feature_maps_and_dims() -> None:
    plugin = _plugin()
    model = plugin.build_model().eval()
    x = torch.rand(1, 3, 64, 64).repeat(2, 1, 1, 1)
    with torch.no_grad():
        maps = plugin.extract(model, x, "medical")
        natural = plugin.extract(model, x, "natural")
    assert [tuple(m.shape) for m in maps] == [(2, 64, 16, 16)] * 2
    assert len(natural) == 4 and torch.equal(maps[0][0], maps[0][1])  # one noise draw for every window
    ran: list[int] = []
    model.out_blocks[1].register_forward_hook(lambda *_: ran.append(1))
    with torch.no_grad():
        model.features(x, torch.tensor([250, 250]), (0,))
    assert not ran  # the forward pass stops at the deepest block read out
    paper = registry.get("maskdm").presets["paper"]
    assert len(paper.blocks_medical) * paper.embed_dim == 3072
    assert len(paper.blocks_natural) * len(paper.timesteps_natural) * paper.embed_dim == 9216


def test_stage1_then_stage2_weights_round_trip(tmp_path: Path) -> None:
    images = [np.random.default_rng(i).random((70, 80, 3)).astype(np.float32) for i in range(3)]
    ctx = RunContext(spec=None, device=torch.device("cpu"))  # type: ignore[arg-type]
    common = dict(stage1_batch=2, stage2_batch=2)

    def trained(s1: int, s2: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # the same initial weights for every split
        return _plugin(stage1_steps=s1, stage2_steps=s2, **common).pretrain(images, ctx)

    init, stage1, both, stage2_only = trained(0, 0), trained(2, 0), trained(2, 2), trained(0, 2)
    for a, b in ((init, stage1), (stage1, both), (both, stage2_only)):
        assert any(not torch.equal(a[k], b[k]) for k in a)  # each stage trains; stage 2 starts from stage 1
    plugin = _plugin(stage1_steps=2, stage2_steps=2, **common)
    path = tmp_path / "maskdm.pt"
    torch.save(both, path)
    for state in (torch.load(path), plugin.load_checkpoint(path)):
        model = plugin.load_backbone(state)
        assert all(torch.equal(v, both[k]) for k, v in model.state_dict().items())
    assert set(plugin.pretrain_identity()) >= {"stage1_steps", "stage2_steps", "mask_ratio", "window"}
    assert "blocks_medical" not in plugin.pretrain_identity()  # probe-only fields reuse the weights


@pytest.mark.parametrize("field,value", [("mask_block", 3), ("window", 66), ("blocks_medical", (2,)),
                                         ("mask_ratio", 1.0), ("stage1_steps", -1)])
def test_bad_settings_fail_before_training(field: str, value: object) -> None:
    with pytest.raises(FieldError, match=f"params.maskdm.{field}"):
        registry.get("maskdm").resolve_config("tiny", {field: value})


@pytest.mark.slow
@pytest.mark.plugins("maskdm")
def test_tiny_preset_end_to_end(tiny_records: dict[str, dict]) -> None:
    record = tiny_records["maskdm"]
    assert record["method"] == "maskdm" and record["extra"]["feature_dim"] == 2 * 64
    assert record["metrics"]["dice"] > 0.5
