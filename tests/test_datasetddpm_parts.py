"""DatasetDDPM's parts: the ancestral sampler, the Jensen-Shannon filter, resumable shards, smp."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.diffusion import betas_for
from bench.diffusion_sampling import AncestralSampler, SamplerConfig, spaced_timesteps
from bench.probe.mlp import EnsembleMLP
from bench.probe.uncertainty import (
    image_uncertainty,
    js_divergence,
    keep_certain,
    label_with_uncertainty,
    majority_vote,
)
from bench.sharded import cached_sharded, shard_folder


class _Oracle(nn.Module):
    """The exact epsilon predictor for data x0 ~ N(mean, sd^2) per dimension."""

    def __init__(self, schedule: str, mean: torch.Tensor | float, sd: float) -> None:
        super().__init__()
        self.ac = torch.cumprod(1 - betas_for(schedule, 1000), 0).float()
        self.mean, self.sd = mean, sd

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ac = self.ac[t].view(-1, 1, 1, 1)
        return (1 - ac).sqrt() * (x - ac.sqrt() * self.mean) / (ac * self.sd**2 + 1 - ac)


def test_spaced_timesteps_cover_both_ends() -> None:
    assert spaced_timesteps(1000, 1000) == list(range(1000))
    steps = spaced_timesteps(1000, 20)
    assert len(steps) == 20 and steps[0] == 0 and steps[-1] == 999
    with pytest.raises(ValueError):
        spaced_timesteps(1000, 0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_full_spacing_keeps_the_training_betas(schedule: str) -> None:
    sampler = AncestralSampler(SamplerConfig(schedule=schedule))
    torch.testing.assert_close(sampler.betas, betas_for(schedule, 1000))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1000, 20])
def test_sampling_with_the_exact_denoiser_of_a_point_returns_it(schedule: str, steps: int) -> None:
    target = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    sampler = AncestralSampler(SamplerConfig(schedule=schedule, sample_steps=steps, variance="fixed_small"))
    out = sampler.sample(_Oracle(schedule, target, 0.0), (3, 3, 8, 8), torch.Generator().manual_seed(0),
                         torch.device("cpu"))
    torch.testing.assert_close(out, target.expand_as(out), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_sampling_a_gaussian_gives_its_spread(variance: str) -> None:
    """Respaced to 50 steps, samples of N(0, 0.3^2) come out with about that spread (the
    variance terms matter here: without noise every sample would collapse onto the mean)."""
    sampler = AncestralSampler(SamplerConfig(schedule="linear", sample_steps=50, variance=variance,
                                             clip_denoised=False))
    out = sampler.sample(_Oracle("linear", 0.0, 0.3), (32, 3, 16, 16), torch.Generator().manual_seed(0),
                         torch.device("cpu"))
    assert 0.25 < float(out.std()) < 0.33 and abs(float(out.mean())) < 0.02


def test_sampling_is_deterministic_for_a_generator() -> None:
    sampler = AncestralSampler(SamplerConfig(sample_steps=10))
    model = _Oracle("linear", 0.0, 0.5)
    a, b = (sampler.sample(model, (2, 3, 8, 8), torch.Generator().manual_seed(5), torch.device("cpu"))
            for _ in range(2))
    torch.testing.assert_close(a, b)


def test_learned_variance_needs_six_channels() -> None:
    sampler = AncestralSampler(SamplerConfig(sample_steps=5, variance="learned"))
    with pytest.raises(ValueError, match="learn_sigma"):
        sampler.sample(_Oracle("linear", 0.0, 0.5), (1, 3, 8, 8), torch.Generator(), torch.device("cpu"))


# --- the Jensen-Shannon filter --------------------------------------------------------------
def _logits(agree: bool, pixels: int = 50, members: int = 4, classes: int = 3, margin: float = 20.0) -> torch.Tensor:
    """Members with logit `margin` for their class: all class 1, or split between classes 0 and 2."""
    out = torch.zeros((members, pixels, classes))
    for k in range(members):
        out[k, :, 1 if agree else (0 if k % 2 else 2)] = margin
    return out


def test_js_divergence_is_zero_for_agreement_and_log2_for_a_split() -> None:
    assert float(js_divergence(_logits(True)).abs().max()) < 1e-4
    torch.testing.assert_close(js_divergence(_logits(False)), torch.full((50,), float(np.log(2))), atol=1e-4, rtol=0)
    assert majority_vote(_logits(True)).eq(1).all()


def test_image_uncertainty_is_the_mean_of_its_most_divergent_pixels() -> None:
    js = torch.zeros(100)
    js[:10] = 1.0
    assert image_uncertainty(js, 0.1) == pytest.approx(1.0)
    assert image_uncertainty(js, 0.2) == pytest.approx(0.5)


def test_filter_drops_the_images_the_ensemble_disagrees_on() -> None:
    """Hand-made ensembles: on a tenth of each image's pixels the members split between two
    classes, more confidently (so more divergent) the higher the image's known level; the 10%
    most divergent images are exactly the ones dropped."""
    levels = np.random.default_rng(0).permutation(20)
    scores = []
    for level in levels:
        logits = _logits(True, pixels=200)
        logits[:, :20] = _logits(False, pixels=20, margin=0.25 * (int(level) + 1))
        scores.append(image_uncertainty(js_divergence(logits), 0.1))
    assert np.argsort(scores).tolist() == np.argsort(levels).tolist()  # JS grows with the level
    dropped = sorted(set(range(20)) - set(keep_certain(scores, 0.1)))
    assert dropped == sorted(np.argsort(levels)[-2:].tolist())  # the two highest levels
    assert len(keep_certain(scores, 0.0)) == 20


def test_skip_certain_reproduces_the_reference_slice() -> None:
    scores = list(np.random.default_rng(1).random(400))
    order = np.argsort(scores)
    n = int(400 * 0.1)
    assert keep_certain(scores, 0.1, skip_certain=30) == sorted(order[30 : -n + 30].tolist())


def test_labels_and_uncertainty_of_one_image_through_a_real_probe() -> None:
    probe = EnsembleMLP(3, 4, 2, (8,), 0.5, 0.1, 1e-5, [torch.Generator().manual_seed(i) for i in range(3)]).eval()
    labels, score = label_with_uncertainty(probe, [torch.randn(4, 4, 4)], (8, 8), 1.0, 0.1)
    assert labels.shape == (8, 8) and set(np.unique(labels)) <= {0, 1} and score >= 0


# --- resumable shards -----------------------------------------------------------------------
def test_an_interrupted_sharded_build_resumes_and_matches(tmp_path: Path) -> None:
    made: list[int] = []

    def make(index: int, items: int, fail_at: int | None = None) -> dict[str, torch.Tensor]:
        if index == fail_at:
            raise KeyboardInterrupt  # a kill in the middle of the build
        made.append(index)
        return {"x": torch.Generator().manual_seed(index).initial_seed() + torch.arange(items)}

    with pytest.raises(KeyboardInterrupt):
        cached_sharded(tmp_path / "a.pt", 10, 4, lambda i, n: make(i, n, fail_at=2))
    assert made == [0, 1] and not (tmp_path / "a.pt").exists()
    resumed = cached_sharded(tmp_path / "a.pt", 10, 4, make)
    assert made == [0, 1, 2] and resumed["resumed_shards"] == 2
    assert not shard_folder(tmp_path / "a.pt").exists()
    fresh = cached_sharded(tmp_path / "b.pt", 10, 4, make)
    torch.testing.assert_close(resumed["x"], fresh["x"])
    assert len(fresh["x"]) == 10
    assert cached_sharded(tmp_path / "a.pt", 10, 4, lambda i, n: pytest.fail("rebuilt"))["resumed_shards"] == 2


# --- smp ----------------------------------------------------------------------------------
def test_deeplab_resnet101_matches_torchvision_parameter_count() -> None:
    import torchvision

    from bench import registry

    with torch.device("meta"):
        tv = torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                                 num_classes=34, aux_loss=False)
    expected = sum(p.numel() for p in tv.parameters())
    assert expected == 58_634_338
    assert registry.get("datasetddpm").param_count() == expected


def test_smp_builds_without_any_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.nn.smp_models import build_smp

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("smp tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    net = build_smp("Unet", "resnet18", 3)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_encoder_checkpoint_loads_a_torchvision_state_dict(tmp_path: Path) -> None:
    import torchvision

    from bench.nn.smp_models import build_smp

    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")  # fc.* included, as torchvision ships it
    net = build_smp("FPN", "resnet18", 2, encoder_checkpoint=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(net.net.encoder.conv1.weight, resnet.conv1.weight)


def test_bad_smp_fields_name_the_field(tmp_path: Path) -> None:
    from bench import registry
    from bench.errors import BenchError, ConfigError

    smp_cls = registry.get("smp")
    with pytest.raises(BenchError, match=r"params\.smp\.arch: expected one of Unet, .*got 'Unnet'"):
        smp_cls.resolve_config("tiny", {"arch": "Unnet"})
    with pytest.raises(ConfigError, match=r"encoder.*'resnet1001'"):
        smp_cls(smp_cls.resolve_config("tiny", {"encoder": "resnet1001"})).build_model()
    with pytest.raises(BenchError, match="no such file"):
        smp_cls(smp_cls.resolve_config("tiny", {"encoder_checkpoint": str(tmp_path / "x.pth")})).build_model()


def test_pass_epochs_can_drop_a_last_short_batch() -> None:
    from bench.supervised import SupervisedConfig, epoch_batches

    cfg = SupervisedConfig(epoch_mode="pass", batch=2)
    assert [len(b) for b in epoch_batches(cfg, 5, torch.Generator())] == [2, 2, 1]
    assert [len(b) for b in epoch_batches(cfg, 5, torch.Generator(), drop_last=True)] == [2, 2]
    assert [len(b) for b in epoch_batches(cfg, 1, torch.Generator(), drop_last=True)] == [1]  # the only one stays
