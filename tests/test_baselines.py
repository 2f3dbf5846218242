"""The supervised baselines: networks at their sizes, the published recipes, and tiny end-to-end runs."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from bench import registry
from bench.cli import main
from bench.errors import FieldError
from bench.protocol import official_pins
from bench.supervised import (
    SupervisedMethod,
    build_optimizer,
    build_scheduler,
    epoch_batches,
    rot_flip_or_rotate,
    rotate,
)

BASELINES = {"unet", "unetpp", "swin_unetr", "attunet", "uctransnet", "medt"}
SUPERVISED = [n for n in registry.names() if registry.get(n).kind == "supervised"]
# The `paper` networks as the official script builds them (REFERENCE §8): the classic UNet, the
# AttentionUnet of widths 64..1024, MONAI's default UNet++ and SwinUNETR, and UCTransNet (2 classes:
# its official loss is CE) and MedT at the 256 crop; the last two as counted on the official code.
PAPER_PARAMS = {"unet": 31_037_698, "attunet": 31_740_402, "unetpp": 2_410_888, "swin_unetr": 6_302_900,
                "uctransnet": 66_488_322, "medt": 1_564_236}


def _plugin(name: str, preset: str, **overrides: object) -> SupervisedMethod:
    """The plugin as a run gets it: the preset resolved, the official pins applied under protocol official."""
    cls = registry.get(name)
    return cls(cls.resolve_config(preset, overrides))


def _side(plugin: SupervisedMethod) -> int:
    return plugin.cfg.input_size or plugin.cfg.crop


def test_the_six_baselines_are_registered() -> None:
    assert BASELINES <= set(SUPERVISED)


# Paper-size shapes are checked on the meta device (no memory, no arithmetic) where that is cheap;
# MONAI's SwinUNETR cannot be built there and MedT's many small ops are slower there than on the CPU.
PAPER_ON_CPU = {"swin_unetr", "medt"}


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("name", SUPERVISED)
@torch.no_grad()
def test_model_maps_a_batch_to_logits_of_its_size(name: str, preset: str, one_thread: None) -> None:
    plugin = _plugin(name, preset)
    on_meta = preset == "paper" and name not in PAPER_ON_CPU
    side, batch = _side(plugin), 2 if preset == "tiny" else 1
    with torch.device("meta" if on_meta else "cpu"):
        model = plugin.build_model(2).eval()
        out = model(torch.rand(batch, 3, side, side))
    assert isinstance(out, torch.Tensor)  # UNet++ returns a list from MONAI: the plugin unwraps it
    assert out.shape == (batch, plugin.out_channels(2), side, side)
    assert on_meta or torch.isfinite(out).all()


def test_only_the_bce_dice_recipe_has_one_output_channel() -> None:
    channels = {name: _plugin(name, "paper", protocol="converged").out_channels(2) for name in BASELINES}
    assert channels == {name: 1 if name == "uctransnet" else 2 for name in BASELINES}
    assert {_plugin(name, "paper").out_channels(2) for name in BASELINES} == {2}  # official: CE on 2 classes


@pytest.mark.parametrize("name", SUPERVISED)
def test_paper_presets_run_the_official_protocol(name: str) -> None:
    cls = registry.get(name)
    assert cls.presets["paper"].protocol == "official"
    cfg = cls.resolve_config("paper")
    pins = official_pins(type(cfg))
    assert {k: getattr(cfg, k) for k in pins} == pins
    assert cfg.input_size is None and cfg.val_fraction == 0 and cfg.loss == "ce" and cfg.crop == 256
    assert cfg.batch == (4 if name == "medt" else 8)  # the official script's batch sizes
    assert cls.resolve_config("paper", {"protocol": "converged"}) == dataclasses.replace(
        cls.presets["paper"], protocol="converged")


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
@pytest.mark.parametrize("name", SUPERVISED)
def test_official_pins_pass_every_presets_own_checks(name: str, preset: str) -> None:
    cfg = registry.get(name).resolve_config(preset, {"protocol": "official"})
    assert cfg.protocol == "official" and cfg.input_size is None


@pytest.mark.parametrize("name", ["uctransnet", "medt"])
@pytest.mark.parametrize("crop", [256, 128])
@torch.no_grad()
def test_fixed_size_networks_are_built_at_the_crop_without_an_input_size(name: str, crop: int,
                                                                          one_thread: None) -> None:
    plugin = _plugin(name, "paper", crop=crop)
    assert plugin.cfg.input_size is None and plugin.cfg.network(2).img_size == crop
    device = "cpu" if name == "medt" and crop == 128 else "meta"  # MedT at 256 runs in the test above
    with torch.device(device):
        model = plugin.build_model(2).eval()
        assert model(torch.rand(1, 3, crop, crop)).shape == (1, 2, crop, crop)
        with pytest.raises(ValueError, match="expects input of shape"):
            model(torch.rand(1, 3, crop + 32, crop + 32))


@pytest.mark.parametrize(("name", "expected"), sorted(PAPER_PARAMS.items()))
def test_paper_models_have_the_published_parameter_counts(name: str, expected: int) -> None:
    assert registry.get(name).param_count() == expected


def test_bench_list_reports_the_baselines_parameter_counts(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {n: rows[n]["params"] for n in PAPER_PARAMS} == PAPER_PARAMS
    for name in SUPERVISED:
        assert rows[name]["kind"] == "supervised" and rows[name]["params"] > 0


def test_uctransnet_lr_follows_cosine_warm_restarts_per_epoch() -> None:
    cfg = _plugin("uctransnet", "paper", protocol="converged").cfg
    opt = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    sched = build_scheduler(cfg, opt)
    assert sched is not None
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lo, hi = 1e-4, 1e-3
    assert math.isclose(lrs[0], hi) and math.isclose(lrs[10], hi) and math.isclose(lrs[20], hi)  # restarts every 10
    assert math.isclose(lrs[5], lo + (hi - lo) / 2) and math.isclose(lrs[15], lrs[5])
    assert min(lrs) > lo and lrs[9] < lrs[5]


def test_medt_optimizer_is_adam_with_weight_decay() -> None:
    cfg = _plugin("medt", "paper", protocol="converged").cfg
    opt = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    assert type(opt) is torch.optim.Adam
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-5
    assert build_scheduler(cfg, opt) is None


@pytest.mark.parametrize("name", ["uctransnet", "medt"])
def test_an_epoch_of_the_published_recipes_is_one_pass_over_the_images(name: str) -> None:
    cfg = _plugin(name, "paper", protocol="converged").cfg
    gen = torch.Generator().manual_seed(0)
    first, second = epoch_batches(cfg, 13, gen), epoch_batches(cfg, 13, gen)
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(13))
        assert [len(b) for b in batches] == [4, 4, 4, 1]
    assert first != second  # reshuffled every epoch


def test_steps_epochs_draw_steps_per_epoch_random_batches() -> None:
    cfg = _plugin("unet", "paper", protocol="converged").cfg
    assert epoch_batches(cfg, 13, torch.Generator()) == [None] * cfg.steps_per_epoch
    with pytest.raises(ValueError, match="epoch_mode"):
        epoch_batches(dataclasses.replace(cfg, epoch_mode="twice"), 13, torch.Generator())


def test_batch_of_given_indices_holds_those_images_in_order() -> None:
    plugin = registry.get("medt")(dataclasses.replace(_plugin("medt", "tiny").cfg, augment="none"))
    data = [(torch.full((3, 4, 4), float(i)), np.full((4, 4), i)) for i in range(5)]
    x, y = plugin._batch(data, torch.Generator(), [3, 0, 4])
    assert x.shape == (3, 3, 4, 4) and y.shape == (3, 1, 4, 4)
    assert x[:, 0, 0, 0].tolist() == [3.0, 0.0, 4.0] and y[:, 0, 0, 0].tolist() == [3, 0, 4]


def _blobs(side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose every channel equals its (asymmetric) label map, so alignment is checkable."""
    y = torch.zeros(side, side, dtype=torch.long)
    y[4:14, 6:26] = 1
    y[18:28, 20:27] = 1
    return y.float().expand(3, side, side).clone(), y


def test_rotation_by_90_degrees_is_rot90() -> None:
    x, y = _blobs()
    xr, yr = rotate(x, y, 90.0)
    k = 1 if torch.equal(yr, torch.rot90(y, 1)) else -1
    assert torch.equal(yr, torch.rot90(y, k)) and not torch.equal(yr, y)
    assert torch.allclose(xr, torch.rot90(x, k, (-2, -1)), atol=1e-4)


@pytest.mark.parametrize("angle", [-20.0, -7.5, 13.0, 20.0])
def test_rotation_keeps_labels_aligned_with_the_image(angle: float) -> None:
    x, y = _blobs()
    xr, yr = rotate(x, y, angle)
    assert yr.dtype == y.dtype and set(yr.unique().tolist()) <= {0, 1}
    assert not torch.equal(yr, y)
    agree = ((xr[0] > 0.5) == (yr == 1)).float().mean().item()
    assert agree > 0.97, agree


def _dihedral(y: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(t, k) for t in (y, y.flip(-1)) for k in range(4)]


def test_rot_flip_or_rotate_mixes_dihedral_moves_with_small_rotations() -> None:
    x, y = _blobs()
    gen = torch.Generator().manual_seed(0)
    moved, rotated = 0, 0
    for _ in range(64):
        xa, ya = rot_flip_or_rotate(x, y, 0.0, gen)  # degrees 0: only dihedral moves (or nothing)
        assert any(torch.equal(ya, d) for d in _dihedral(y)) and torch.equal(xa[0].round().long(), ya)
        xb, yb = rot_flip_or_rotate(x, y, 20.0, gen)
        dihedral = any(torch.equal(yb, d) for d in _dihedral(y))
        rotated += not dihedral
        moved += not torch.equal(yb, y)
        assert ((xb[0] > 0.5) == (yb == 1)).float().mean() > 0.97
    assert rotated > 5 and moved > 40


@pytest.mark.parametrize(("name", "bad", "message"), [
    ("swin_unetr", {"crop": 48}, "crop: must be a multiple of 32"),
    ("uctransnet", {"input_size": 200}, "input_size: must be divisible by 16"),
    ("medt", {"input_size": 96}, "input_size: must be divisible by grid"),
])
def test_sizes_the_network_cannot_take_fail_when_the_config_is_resolved(name: str, bad: dict, message: str) -> None:
    cls = registry.get(name)
    with pytest.raises(FieldError, match=message):
        cls.resolve_config("tiny", bad)
    good = {key: 2 * _side(_plugin(name, "tiny")) for key in bad}
    assert dataclasses.asdict(cls.resolve_config("tiny", good)).items() >= good.items()


@pytest.mark.slow
@pytest.mark.parametrize("name", SUPERVISED)
def test_tiny_baseline_learns_synthetic_glands_end_to_end(name: str, tiny_records: dict[str, dict]) -> None:
    record = tiny_records[name]
    assert record["method"] == name and record["kind"] == "supervised" and record["fraction"] == 1.0
    assert record["extra"]["params"] == sum(p.numel() for p in _plugin(name, "tiny").build_model(2).parameters())
    # All background scores 0 and all foreground about 0.38: the model must have learned the glands.
    assert record["metrics"]["dice"] > 0.5, record["metrics"]
