"""The guided-diffusion UNet loads published checkpoints strictly and exposes the paper's features."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.errors import ConfigError, DataError
from bench.nn.checkpoint import load_state_dict_strict
from bench.nn.gd_blocks import AttentionBlock, GroupNorm32
from bench.nn.gd_unet import GDUNet, GDUNetConfig, decoder_block_channels, decoder_block_strides

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/guided_diffusion_checkpoints.json"
EXPECTED_PARAMS = {"ddpm_ffhq256": 552_814_086, "mdm_medical256": 311_017_539,
                   "ddpm_medical256": 311_022_726}
MDM_MEDICAL_ARGS = {"image_size": 256, "num_channels": 192, "num_res_blocks": 2,
                    "attention_resolutions": "32,16,8", "num_head_channels": 64,
                    "learn_sigma": False, "resblock_updown": True, "use_scale_shift_norm": True}


SIZE = 16


def small_config(**overrides: object) -> GDUNetConfig:
    """16 px, two levels, attention at resolution 8: big enough to exercise every block type."""
    args: dict = dict(image_size=SIZE, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(2,), num_head_channels=32, use_scale_shift_norm=True,
                      resblock_updown=True)
    return GDUNetConfig(**{**args, **overrides})


def build(cfg: GDUNetConfig, seed: int = 0) -> GDUNet:
    """A model whose zero-initialised layers are randomised, so outputs depend on every weight."""
    torch.manual_seed(seed)
    model = GDUNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_published_configs_have_exact_keys_shapes_and_param_count(name: str) -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"reference file absent: {REFERENCE}")
    entry = json.loads(REFERENCE.read_text())[name]
    cfg = GDUNetConfig.from_guided_diffusion_args(entry["config"])
    with torch.device("meta"):
        model = GDUNet(cfg)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == entry["state_dict_shapes"]
    assert list(shapes) == list(entry["state_dict_shapes"])  # same order as the release
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == entry["params"] == EXPECTED_PARAMS[name]
    assert len(model.output_blocks) == 18


def test_args_follow_guided_diffusion_conventions() -> None:
    cfg = GDUNetConfig.from_guided_diffusion_args({**MDM_MEDICAL_ARGS, "learn_sigma": True})
    assert cfg.attention_resolutions == (8, 16, 32)  # resolutions 32,16,8 at 256 px
    assert cfg.channel_mult == (1, 1, 2, 2, 4, 4)  # default for 256 px
    assert cfg.resolved_out_channels == 6
    with pytest.raises(ConfigError, match="num_chanels"):
        GDUNetConfig.from_guided_diffusion_args({**MDM_MEDICAL_ARGS, "num_chanels": 64})


@pytest.mark.parametrize("overrides", [
    {},
    {"learn_sigma": True},
    {"use_scale_shift_norm": False, "resblock_updown": False, "use_new_attention_order": True},
])
def test_forward_on_cpu_has_expected_shape(overrides: dict) -> None:
    cfg = small_config(**overrides)
    model = build(cfg)
    x = torch.randn(2, 3, SIZE, SIZE)
    out = model(x, torch.tensor([10, 500]))
    assert out.shape == (2, 6 if cfg.learn_sigma else 3, SIZE, SIZE)
    assert torch.isfinite(out).all()
    # A scalar timestep broadcasts over the batch; a different timestep changes the prediction.
    assert torch.allclose(model(x, torch.tensor(10)), model(x, torch.tensor([10, 10])), atol=1e-6)
    assert not torch.allclose(model(x, torch.tensor(10)), model(x, torch.tensor(900)))


def reference_attention(block: AttentionBlock, x: torch.Tensor, new_order: bool) -> torch.Tensor:
    """guided-diffusion's attention written out with explicit softmax, from the published layout."""
    b, c, hgt, wid = x.shape
    heads, ch = block.num_heads, c // block.num_heads
    flat = x.reshape(b, c, -1)
    qkv = F.conv1d(block.norm(flat), block.qkv.weight, block.qkv.bias)  # (b, 3c, T)
    if new_order:  # [q all heads | k | v]
        q, k, v = (t.reshape(b * heads, ch, -1) for t in qkv.chunk(3, dim=1))
    else:  # per head [q | k | v]
        q, k, v = qkv.reshape(b * heads, 3 * ch, -1).split(ch, dim=1)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(ch), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    h = F.conv1d(a, block.proj_out.weight, block.proj_out.bias)
    return (flat + h).reshape(b, c, hgt, wid)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_matches_guided_diffusion_layout(new_order: bool) -> None:
    torch.manual_seed(0)
    block = AttentionBlock(64, num_head_channels=32, use_new_attention_order=new_order)
    torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), reference_attention(block, x, new_order), atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_scale_shift_norm_equals_norm_times_scale_plus_shift(channels_last: bool) -> None:
    torch.manual_seed(0)
    norm = GroupNorm32(32, 64)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(3, 64, 5, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    scale, shift = torch.randn(3, 64, requires_grad=True), torch.randn(3, 64, requires_grad=True)
    fused = norm.modulated(x, scale, shift)
    plain = norm(x) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    assert torch.allclose(fused, plain, atol=1e-5)
    g = torch.randn_like(plain)
    grads = torch.autograd.grad(fused, [scale, shift, norm.weight], g)
    expected = torch.autograd.grad(plain, [scale, shift, norm.weight], g)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-4)


def test_state_dict_round_trips_strictly_including_fp16(tmp_path: Path) -> None:
    cfg = small_config(learn_sigma=True)
    src, x, t = build(cfg, seed=0), torch.randn(1, 3, SIZE, SIZE), torch.tensor([3])
    path = tmp_path / "model.pt"
    torch.save(src.state_dict(), path)
    dst = load_state_dict_strict(build(cfg, seed=1), path, "model.pt")
    with torch.no_grad():
        assert torch.equal(dst(x, t), src(x, t))

    half = {k: v.half() for k, v in src.state_dict().items()}
    torch.save({"ema": half}, tmp_path / "half.pt")  # wrapped, as training checkpoints often are
    for dtype in (torch.float32, torch.bfloat16):
        model = build(cfg, seed=2).to(dtype)
        load_state_dict_strict(model, tmp_path / "half.pt", "half.pt")
        w = model.state_dict()["out.2.weight"]
        assert w.dtype == dtype
        assert torch.equal(w, half["out.2.weight"].to(dtype))


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    model = build(small_config())
    state = dict(model.state_dict())
    state.pop("out.2.bias")
    state["extra.weight"] = torch.zeros(1)
    state["out.0.weight"] = torch.zeros(5)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(DataError) as err:
        load_state_dict_strict(model, path, "bad.pt")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("bad.pt:")
    assert "1 missing: out.2.bias" in msg and "1 unexpected: extra.weight" in msg
    assert "out.0.weight" in msg and "[5]" in msg  # the shape mismatch


def test_decoder_geometry_matches_hooked_output_blocks() -> None:
    for cfg in (small_config(channel_mult=(1, 2, 2)), small_config(resblock_updown=False)):
        model = build(cfg)
        seen: dict[int, tuple[int, ...]] = {}
        for i, block in enumerate(model.output_blocks):
            block.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out.shape))
        with torch.no_grad():
            model(torch.randn(1, 3, SIZE, SIZE), torch.tensor([1]))
        assert [seen[i][1] for i in range(len(seen))] == decoder_block_channels(cfg)
        assert [SIZE // seen[i][2] for i in range(len(seen))] == decoder_block_strides(cfg)


def test_paper_feature_dims_from_config_alone() -> None:
    cfg = GDUNetConfig.from_guided_diffusion_args(MDM_MEDICAL_ARGS)
    channels = decoder_block_channels(cfg)
    assert channels[:6] == [768] * 6 and channels[6:12] == [384] * 6 and channels[12:] == [192] * 6
    assert sum(channels[8:13]) == 1728  # medical: blocks 8..12
    assert sum(channels[5:13]) == 3264  # natural: blocks 5..12


@pytest.mark.parametrize("mode", ["bf16_autocast", "bf16_weights", "use_fp16"])
def test_reduced_precision_runs_close_to_float32(mode: str) -> None:
    cfg = small_config(learn_sigma=True)
    ref_model, x, t = build(cfg), torch.randn(2, 3, SIZE, SIZE), torch.tensor([5, 700])
    with torch.no_grad():
        ref = ref_model(x, t)
        if mode == "bf16_autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = ref_model(x, t)
        elif mode == "bf16_weights":
            out = build(cfg).to(torch.bfloat16)(x.bfloat16(), t)
        else:
            half = GDUNet(small_config(learn_sigma=True, use_fp16=True))
            half.load_state_dict(ref_model.state_dict())
            out = half(x, t)
            assert out.dtype == torch.float32  # the trunk is float16, the output is not
    assert torch.isfinite(out).all()
    # Compared in L2 norm over the whole output, not at the worst pixel: how bf16 rounding errors
    # add up depends on the CPU's kernels (tests/test_nets_ported.py says more).
    assert (out.float() - ref).norm() < 0.05 * ref.norm()


def test_unusable_checkpoints_raise_data_error(tmp_path: Path) -> None:
    model = build(small_config())
    with pytest.raises(DataError, match="not found"):
        load_state_dict_strict(model, tmp_path / "absent.pt", "absent.pt")
    state = model.state_dict()
    torch.save({"model": state, "ema": state}, tmp_path / "both.pt")
    with pytest.raises(DataError, match="key="):  # ambiguous: the caller must choose
        load_state_dict_strict(model, tmp_path / "both.pt", "both.pt")
    load_state_dict_strict(model, tmp_path / "both.pt", "both.pt", key="ema")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read"):
        load_state_dict_strict(model, tmp_path / "junk.pt", "junk.pt")
